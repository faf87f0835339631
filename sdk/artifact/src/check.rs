//! `cargo backworks check <file>... [--json]` (alias `inspect`): says whether
//! files are valid Backworks plugin libraries, from their bytes alone,
//! without loading them or running any of their code.
//!
//! For each file it reads (whole into memory, never mapped: see
//! [`check_file`]), through the `object` crate:
//!
//! - the object format (ELF, PE, Mach-O; anything else gets a verdict
//!   naming what it is), architecture, OS where the file records it, byte
//!   order, and whether it is a shared library;
//! - the exported symbols: how many, and whether `plugin_info` and
//!   `plugin_vtable` are exported as functions and `backworks_plugin_metadata`
//!   as data;
//! - the metadata record (`docs/abi.md`), its ABI version against the range
//!   this tool supports ([`SUPPORTED_ABI`]), and its struct sizes against the
//!   file's pointer width;
//! - whether the target triple the record claims, and the one in the file
//!   name when it follows the distribution layout
//!   `<name>-<version>-<target>.<so|dll|dylib>`, agree with the file's
//!   format and architecture, and whether the extension fits the format;
//! - the platform floor ([`crate::floor`]): the newest glibc release an ELF
//!   file needs, a Mach-O file's minimum macOS.
//!
//! Every problem is a [`Finding`] with a stable [`FindingCode`]; an
//! [`Severity::Error`] makes the file invalid. Only the headers, section
//! table, export structures and the record are read: never debug sections,
//! and the static symbol table only when a record is found neither by
//! section nor by export. The report formats and exit codes are documented
//! in `docs/check.md`.

use std::fmt::{self, Write as _};
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::abi::{ABI_VERSION, METADATA_SYMBOL, PLUGIN_INFO_SYMBOL, PLUGIN_VTABLE_SYMBOL};
use crate::file::FileError;
use crate::floor::{self, FloorReport};
use crate::inspect::{self, ExportedSymbol, InspectError};
use crate::metadata::{self, ByteOrder, PluginMetadata};
use crate::terminal::escape;
use object::{Object, ObjectSection};
use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::target::{self, Endianness, Format, TargetInfo};

/// The plugin ABI versions this tool checks plugins for.
pub const SUPPORTED_ABI: RangeInclusive<u32> = ABI_VERSION..=ABI_VERSION;

/// The largest file [`check_file`] reads: 512 MiB. Release plugins are a
/// few MiB; the cap keeps a wrong path (a disk image, `/dev/zero` behind a
/// symlink is refused as not a regular file) from filling memory.
pub const MAX_FILE_SIZE: u64 = 512 << 20;

/// Why `check` could not do its work: a file could not be opened or read,
/// there was nothing to check, or the report could not be written. A file
/// that is read but is not a valid plugin is not an error: it is a
/// [`FileReport`] with findings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The file cannot be opened or its metadata read.
    #[error("cannot open {}: {source}; check the path and its permissions", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The path (after symbolic links) is a directory, device, FIFO or
    /// socket.
    #[error(
        "cannot check {}: not a regular file (it is {kind}); pass the path of a .so, .dll or .dylib file",
        path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: `a FIFO`, `a directory`, ...
        kind: &'static str,
    },
    /// The file cannot be read.
    #[error("cannot read {}: {source}; check that it is readable and not being rewritten", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_FILE_SIZE`]: no plugin library is.
    #[error(
        "cannot check {}: it is {size} bytes, more than the {max} bytes (512 MiB) a plugin library may be; pass the plugin's .so, .dll or .dylib",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// [`MAX_FILE_SIZE`].
        max: u64,
    },
    /// `cargo backworks check` was given no files.
    #[error(
        "no files to check; pass the path of at least one plugin library (.so, .dll or .dylib)"
    )]
    NoFiles,
    /// The report could not be written to the output.
    #[error("cannot write the check report: {0}")]
    Write(#[source] io::Error),
}

impl CheckError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Open { path, .. }
            | Self::NotAFile { path, .. }
            | Self::Read { path, .. }
            | Self::TooLarge { path, .. } => Some(path),
            Self::NoFiles | Self::Write(_) => None,
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The file is not a valid plugin.
    Error,
    /// Worth fixing; the file is still a valid plugin.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// What a finding is about: a stable, kebab-case code (see `docs/check.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingCode {
    /// Not an ELF, PE or Mach-O file: empty, text, WebAssembly, a static
    /// archive, a universal binary, or unrecognised bytes.
    NotAnObject,
    /// An ELF, PE or Mach-O file that cannot be parsed: truncated or corrupt
    /// headers or export table.
    MalformedObject,
    /// An object file that is not a shared library (an executable, a
    /// relocatable object, a core dump).
    NotASharedLibrary,
    /// A shared library the dynamic loader cannot map: an ELF file without
    /// a `PT_LOAD` or `PT_DYNAMIC` program header, a Mach-O dylib without a
    /// segment, a PE DLL without a section.
    NotLoadable,
    /// `plugin_info`, `plugin_vtable` or `backworks_plugin_metadata` is not
    /// exported.
    MissingSymbol,
    /// `plugin_info` or `plugin_vtable` is exported, but not as a function.
    SymbolNotAFunction,
    /// `backworks_plugin_metadata` is exported, but not as data.
    SymbolNotData,
    /// No metadata record: neither the section nor the symbol.
    NoMetadata,
    /// The metadata record is malformed (or there are two).
    InvalidMetadata,
    /// The record's ABI version is outside [`SUPPORTED_ABI`].
    UnsupportedAbi,
    /// The record's `info_size` or `vtable_size` does not match the file's
    /// pointer width.
    StructSizeMismatch,
    /// The plugin was built with `panic = "abort"`; hosts refuse it.
    PanicAbort,
    /// The record's target triple is not one this tool knows (warning), or
    /// is not shaped like a triple at all (error).
    UnknownTarget,
    /// The record's or file name's target does not match the file, or the
    /// two disagree.
    TargetMismatch,
    /// The file name's `<name>-<version>` differs from the record's
    /// (warning).
    FileNameMismatch,
    /// The extension does not fit the format (error for a wrong `.so`,
    /// `.dll` or `.dylib`; warning for another extension).
    ExtensionMismatch,
    /// A Mach-O library whose install name is an absolute path (warning).
    AbsoluteInstallName,
}

impl FindingCode {
    /// Every code, in documentation order.
    pub const ALL: [Self; 17] = [
        Self::NotAnObject,
        Self::MalformedObject,
        Self::NotASharedLibrary,
        Self::NotLoadable,
        Self::MissingSymbol,
        Self::SymbolNotAFunction,
        Self::SymbolNotData,
        Self::NoMetadata,
        Self::InvalidMetadata,
        Self::UnsupportedAbi,
        Self::StructSizeMismatch,
        Self::PanicAbort,
        Self::UnknownTarget,
        Self::TargetMismatch,
        Self::FileNameMismatch,
        Self::ExtensionMismatch,
        Self::AbsoluteInstallName,
    ];

    /// The code as it appears in text and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnObject => "not-an-object",
            Self::MalformedObject => "malformed-object",
            Self::NotASharedLibrary => "not-a-shared-library",
            Self::NotLoadable => "not-loadable",
            Self::MissingSymbol => "missing-symbol",
            Self::SymbolNotAFunction => "symbol-not-a-function",
            Self::SymbolNotData => "symbol-not-data",
            Self::NoMetadata => "no-metadata",
            Self::InvalidMetadata => "invalid-metadata",
            Self::UnsupportedAbi => "unsupported-abi",
            Self::StructSizeMismatch => "struct-size-mismatch",
            Self::PanicAbort => "panic-abort",
            Self::UnknownTarget => "unknown-target",
            Self::TargetMismatch => "target-mismatch",
            Self::FileNameMismatch => "file-name-mismatch",
            Self::ExtensionMismatch => "extension-mismatch",
            Self::AbsoluteInstallName => "absolute-install-name",
        }
    }
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of problem.
    pub code: FindingCode,
    /// Whether it makes the file invalid.
    pub severity: Severity,
    /// What is wrong, naming the symbol, field or file, and how to fix it.
    pub message: String,
}

/// What a file is, as far as `check` could tell from its first bytes and
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FileFormat {
    /// ELF.
    Elf,
    /// PE/COFF image (`.dll`, `.exe`).
    Pe,
    /// Mach-O (one architecture).
    MachO,
    /// COFF relocatable object (`.obj`).
    Coff,
    /// XCOFF (AIX).
    Xcoff,
    /// Unix `ar` archive: a static library (`.a`, `.lib`, `.rlib`).
    Archive,
    /// Mach-O universal ("fat") binary holding several architectures.
    MachOUniversal,
    /// Apple dyld shared cache.
    DyldCache,
    /// Windows short import library member.
    CoffImport,
    /// WebAssembly module.
    Wasm,
    /// Text (UTF-8 without control bytes).
    Text,
    /// Zero bytes.
    Empty,
    /// None of the above.
    Unknown,
}

impl FileFormat {
    /// The plugin format this is, for ELF, PE and Mach-O.
    pub fn plugin_format(self) -> Option<Format> {
        match self {
            Self::Elf => Some(Format::Elf),
            Self::Pe => Some(Format::Pe),
            Self::MachO => Some(Format::MachO),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Elf => "ELF",
            Self::Pe => "PE",
            Self::MachO => "Mach-O",
            Self::Coff => "COFF",
            Self::Xcoff => "XCOFF",
            Self::Archive => "static library archive",
            Self::MachOUniversal => "Mach-O universal binary",
            Self::DyldCache => "dyld shared cache",
            Self::CoffImport => "Windows import library member",
            Self::Wasm => "WebAssembly module",
            Self::Text => "text",
            Self::Empty => "empty file",
            Self::Unknown => "unrecognised data",
        }
    }
}

/// What kind of object file a parsed file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ObjectKind {
    /// A shared library (ELF `ET_DYN` that is not a PIE, PE DLL, Mach-O
    /// `MH_DYLIB`): what a plugin is.
    SharedLibrary,
    /// An executable (including an ELF position-independent executable).
    Executable,
    /// A relocatable object (`.o`, `.obj`).
    Relocatable,
    /// A core dump.
    Core,
    /// Something else (a Mach-O bundle, a kernel extension, …).
    Unknown,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SharedLibrary => "shared library",
            Self::Executable => "executable",
            Self::Relocatable => "relocatable object",
            Self::Core => "core dump",
            Self::Unknown => "object of unknown kind",
        })
    }
}

/// What an exported symbol refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SymbolKind {
    /// Code: an ELF `STT_FUNC`/`STT_GNU_IFUNC`, or an address in an
    /// executable section.
    Function,
    /// Data: an ELF `STT_OBJECT`, or an address in a data section.
    Data,
    /// A thread-local variable.
    ThreadLocal,
    /// An absolute value, not an address.
    Absolute,
    /// Forwarded to another library.
    Reexport,
    /// An address in no known section.
    Unknown,
}

impl fmt::Display for SymbolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Function => "function",
            Self::Data => "data",
            Self::ThreadLocal => "thread-local",
            Self::Absolute => "absolute",
            Self::Reexport => "re-export",
            Self::Unknown => "unknown",
        })
    }
}

/// One of the three ABI symbols, as exported by a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SymbolReport {
    /// Whether the symbol is exported.
    pub exported: bool,
    /// What it refers to (`None` when not exported).
    pub kind: Option<SymbolKind>,
    /// Its virtual address, when it has one.
    pub address: Option<u64>,
    /// The section holding that address, when known.
    pub section: Option<String>,
}

/// The exported symbols of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportsReport {
    /// How many symbols the file exports.
    pub count: usize,
    /// `plugin_info`.
    pub plugin_info: SymbolReport,
    /// `plugin_vtable`.
    pub plugin_vtable: SymbolReport,
    /// `backworks_plugin_metadata`.
    pub backworks_plugin_metadata: SymbolReport,
}

/// A parsed metadata record and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataReport {
    /// The record.
    pub metadata: PluginMetadata,
    /// Where it is: ``section `.bwmeta` `` or
    /// ``symbol `backworks_plugin_metadata` at 0x…``.
    pub location: String,
}

impl Serialize for MetadataReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = &self.metadata;
        let mut s = serializer.serialize_struct("MetadataReport", 16)?;
        s.serialize_field("name", &m.name)?;
        s.serialize_field("version", &m.version)?;
        s.serialize_field("description", &m.description)?;
        s.serialize_field("target", &m.target)?;
        s.serialize_field("sdk_version", &m.sdk_version)?;
        s.serialize_field("abi_version", &m.header.abi_version)?;
        s.serialize_field("abi_revision", &m.abi_revision())?;
        s.serialize_field("record_size", &m.header.record_size)?;
        s.serialize_field("info_size", &m.header.info_size)?;
        s.serialize_field("vtable_size", &m.header.vtable_size)?;
        s.serialize_field("flags", &m.header.flags)?;
        s.serialize_field("panic_abort", &m.panic_aborts())?;
        s.serialize_field("byte_order", &endianness_of(m.header.byte_order))?;
        s.serialize_field("capabilities", &m.capabilities)?;
        s.serialize_field("location", &self.location)?;
        s.end()
    }
}

/// What `check` found out about one file. Serialises as one element of the
/// JSON report's `files` array (`docs/check.md`).
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    path: PathBuf,
    valid: bool,
    size: Option<u64>,
    format: Option<FileFormat>,
    architecture: Option<String>,
    pointer_width: Option<u8>,
    os: Option<String>,
    min_os_version: Option<String>,
    install_name: Option<String>,
    floor: Option<FloorReport>,
    description: Option<String>,
    endianness: Option<Endianness>,
    kind: Option<ObjectKind>,
    exports: Option<ExportsReport>,
    metadata: Option<MetadataReport>,
    findings: Vec<Finding>,
    error: Option<String>,
}

impl FileReport {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            valid: false,
            size: None,
            format: None,
            architecture: None,
            pointer_width: None,
            os: None,
            min_os_version: None,
            install_name: None,
            floor: None,
            description: None,
            endianness: None,
            kind: None,
            exports: None,
            metadata: None,
            findings: Vec::new(),
            error: None,
        }
    }

    /// The report of a file that could not be read: no findings, the error
    /// in [`FileReport::error`].
    pub fn unreadable(path: &Path, error: &CheckError) -> Self {
        Self {
            error: Some(error.to_string()),
            ..Self::new(path)
        }
    }

    /// `true` when the file was read and has no error-severity finding.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the file could not be read, for an unreadable file.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The file's size in bytes, when it was read.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// What the file is.
    pub fn format(&self) -> Option<FileFormat> {
        self.format
    }

    /// The architecture, for an object file (`x86_64`, `aarch64`, …).
    pub fn architecture(&self) -> Option<&str> {
        self.architecture.as_deref()
    }

    /// The OS, when the file records it (`linux`, `windows`, `macos`, …).
    pub fn os(&self) -> Option<&str> {
        self.os.as_deref()
    }

    /// A Mach-O file's minimum OS version (`11.0`), from `LC_BUILD_VERSION`
    /// or `LC_VERSION_MIN_*`.
    pub fn min_os_version(&self) -> Option<&str> {
        self.min_os_version.as_deref()
    }

    /// A Mach-O library's install name (`LC_ID_DYLIB`).
    pub fn install_name(&self) -> Option<&str> {
        self.install_name.as_deref()
    }

    /// The oldest system the library loads on (ELF and Mach-O shared
    /// libraries): the newest glibc release it needs, its minimum macOS
    /// ([`crate::floor`]).
    pub fn floor(&self) -> Option<&FloorReport> {
        self.floor.as_ref()
    }

    /// What the file is, in one line, as the text report's `file:` line
    /// says it (object files only).
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The byte order, for an object file.
    pub fn endianness(&self) -> Option<Endianness> {
        self.endianness
    }

    /// Pointer width in bits, for an object file.
    pub fn pointer_width(&self) -> Option<u8> {
        self.pointer_width
    }

    /// The kind of object file.
    pub fn kind(&self) -> Option<ObjectKind> {
        self.kind
    }

    /// The exported symbols, when the export table could be read.
    pub fn exports(&self) -> Option<&ExportsReport> {
        self.exports.as_ref()
    }

    /// The metadata record, when one was found and parsed.
    pub fn metadata(&self) -> Option<&PluginMetadata> {
        self.metadata.as_ref().map(|m| &m.metadata)
    }

    /// Where the metadata record was found, when it was parsed.
    pub fn metadata_location(&self) -> Option<&str> {
        self.metadata.as_ref().map(|m| m.location.as_str())
    }

    /// Every finding, in the order they were made.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Whether there is a finding with `code`.
    pub fn has(&self, code: FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The report as text for people: a verdict line naming the file, the
    /// facts found (format, exports, plugin, ABI), then one line per
    /// finding (`error[code]: message`). Ends with a newline.
    pub fn render_text(&self) -> String {
        // The record's strings, a Mach-O install name and the messages
        // quoting them come from the file: escaped for the terminal.
        let mut out = String::new();
        let path = self.path.display().to_string();
        let path = escape(&path);
        if let Some(error) = &self.error {
            let _ = writeln!(out, "{path}: cannot be read\n  error: {}", escape(error));
            return out;
        }
        let verdict = if self.valid {
            String::from("valid plugin")
        } else {
            String::from("not a valid plugin")
        };
        let (errors, warnings) = (self.count(Severity::Error), self.count(Severity::Warning));
        let counts = match (errors, warnings) {
            (0, 0) => String::new(),
            (e, 0) => format!(" ({})", plural(e, "error")),
            (0, w) => format!(" ({})", plural(w, "warning")),
            (e, w) => format!(" ({}, {})", plural(e, "error"), plural(w, "warning")),
        };
        let _ = writeln!(out, "{path}: {verdict}{counts}");
        let _ = writeln!(out, "  file:      {}", self.describe_file());
        if let Some(install_name) = &self.install_name {
            let _ = writeln!(out, "  install:   {}", escape(install_name));
        }
        if let Some(floor) = &self.floor {
            let text = floor.describe().unwrap_or_else(|| match self.format {
                Some(FileFormat::MachO) => String::from("no minimum macOS declared"),
                _ => String::from("no versioned glibc symbol needed"),
            });
            let _ = writeln!(out, "  floor:     {}", escape(&text));
        }
        if let Some(exports) = &self.exports {
            let symbol = |name: &str, s: &SymbolReport| match s.kind {
                Some(kind) if s.exported => format!("{name} {kind}"),
                _ => format!("{name} missing"),
            };
            let _ = writeln!(
                out,
                "  exports:   {} ({}, {}, {})",
                plural(exports.count, "symbol"),
                symbol(PLUGIN_INFO_SYMBOL, &exports.plugin_info),
                symbol(PLUGIN_VTABLE_SYMBOL, &exports.plugin_vtable),
                symbol(METADATA_SYMBOL, &exports.backworks_plugin_metadata),
            );
        }
        if let Some(report) = &self.metadata {
            let m = &report.metadata;
            let description = if m.description.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(&m.description))
            };
            let _ = writeln!(
                out,
                "  plugin:    {} {}{description}",
                escape(&m.name),
                escape(&m.version)
            );
            let _ = writeln!(out, "  target:    {}", escape(&m.target));
            let _ = writeln!(
                out,
                "  abi:       {} (this tool supports {}, up to {}), sdk {}",
                m.abi_revision(),
                supported_abi_text(),
                metadata::AbiRevision::NEWEST,
                escape(&m.sdk_version)
            );
            let _ = writeln!(
                out,
                "  needs:     {}",
                match &m.capabilities {
                    Some(capabilities) => escape(&capabilities.to_string()).into_owned(),
                    None => String::from("nothing declared (the process tier's defaults)"),
                }
            );
            let _ = writeln!(out, "  record:    {}", report.location);
        }
        for finding in &self.findings {
            let _ = writeln!(
                out,
                "  {}[{}]: {}",
                finding.severity,
                finding.code,
                escape(&finding.message)
            );
        }
        out
    }

    fn describe_file(&self) -> String {
        let Some(format) = self.format else {
            return String::from("unknown");
        };
        let mut text = String::new();
        // Details only for a file that parsed as an object file.
        if self.kind.is_some() {
            text.push_str(format.describe());
            if let Some(width) = self.pointer_width {
                let _ = write!(text, " {width}-bit");
            }
            if let Some(endianness) = self.endianness {
                let _ = write!(text, " {endianness}");
            }
            if let Some(kind) = self.kind {
                let _ = write!(text, " {kind}");
            }
            if let Some(architecture) = &self.architecture {
                let _ = write!(text, ", {architecture}");
            }
            let _ = write!(
                text,
                ", os {}",
                self.os.as_deref().unwrap_or("not recorded")
            );
            if let Some(version) = &self.min_os_version {
                let _ = write!(text, " {version} or later");
            }
        } else {
            text.push_str(format.describe());
        }
        text
    }

    fn finding(&mut self, code: FindingCode, severity: Severity, message: String) {
        self.findings.push(Finding {
            code,
            severity,
            message,
        });
    }

    fn error_finding(&mut self, code: FindingCode, message: String) {
        self.finding(code, Severity::Error, message);
    }
}

/// Inspects one file, read whole into memory (at most [`MAX_FILE_SIZE`]
/// bytes). Err only when the file cannot be opened or read (I/O), is not a
/// regular file, or is too large; whatever its contents, a file that is read
/// gets a [`FileReport`].
///
/// The file is read, not mapped: a mapped file truncated by another process
/// during the check would kill this one with SIGBUS. A file that changes
/// while it is read is checked as the bytes read, which may be a mix of old
/// and new; the report is then about those bytes.
pub fn check_file(path: &Path) -> Result<FileReport, CheckError> {
    // Opened without blocking and checked by `fstat` of the opened file
    // (`file::open`): a FIFO, or one swapped in for the path, is refused
    // instead of hanging the check.
    let bytes = crate::file::read(path, MAX_FILE_SIZE).map_err(|error| match error {
        FileError::Open { path, source } => CheckError::Open { path, source },
        FileError::NotRegular { path, kind } => CheckError::NotAFile { path, kind },
        FileError::TooLarge { path, size, max } => CheckError::TooLarge { path, size, max },
        FileError::Read { path, source } => CheckError::Read { path, source },
    })?;
    Ok(check_bytes(path, &bytes))
}

/// Inspects `bytes` as the contents of the file at `path` (used for
/// messages and for the file-name checks). Never panics, whatever the bytes.
pub fn check_bytes(path: &Path, bytes: &[u8]) -> FileReport {
    let mut report = FileReport::new(path);
    report.size = Some(bytes.len() as u64);
    Analysis {
        report: &mut report,
        name: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    }
    .run(bytes);
    report.valid = report.count(Severity::Error) == 0;
    report
}

/// The facts about an object file that a target triple can be compared with.
#[derive(Debug, Clone, Copy)]
struct Facts {
    format: Format,
    architecture: object::Architecture,
    endianness: Endianness,
    os: Option<&'static str>,
    pointer_width: u8,
}

impl Facts {
    /// What differs between this file and what `target` implies.
    fn differences(&self, target: &TargetInfo) -> Vec<String> {
        let mut differences = Vec::new();
        if target.format != self.format {
            differences.push(format!("format {} (not {})", self.format, target.format));
        }
        if target.architecture != self.architecture {
            differences.push(format!(
                "architecture {} (not {})",
                target::architecture_name(self.architecture),
                target::architecture_name(target.architecture)
            ));
        }
        if target.endianness != self.endianness {
            differences.push(format!("{} (not {})", self.endianness, target.endianness));
        }
        if let (Some(os), Some(expected)) = (self.os, target.os)
            && os != expected
        {
            differences.push(format!("OS {os} (not {expected})"));
        }
        differences
    }
}

struct Analysis<'r> {
    report: &'r mut FileReport,
    /// The file name, for messages.
    name: String,
}

impl Analysis<'_> {
    fn run(mut self, bytes: &[u8]) {
        let Some(object) = self.object(bytes) else {
            return;
        };
        let Some(facts) = self.describe(&object, bytes) else {
            return;
        };
        let shared = self.report.kind == Some(ObjectKind::SharedLibrary);
        if shared {
            self.loadable_findings(&object);
        }
        let record = inspect::locate_record(&object);
        let exports = match read_exports(&object) {
            Ok(exports) => Some(exports),
            Err(error) => {
                let name = &self.name;
                self.report.error_finding(
                    FindingCode::MalformedObject,
                    format!(
                        "`{name}`: {error}; the file is truncated or corrupt: rebuild it or download it again"
                    ),
                );
                None
            }
        };
        if shared && let Some(exports) = &exports {
            let no_record = matches!(record, Err(InspectError::NoRecord));
            self.symbol_findings(exports, no_record);
        }
        self.report.exports = exports;
        let metadata = self.metadata_findings(record, facts);
        if let Some(metadata) = &metadata {
            self.target_findings(metadata, facts);
        }
        self.file_name_findings(metadata.as_ref(), facts, shared);
    }

    /// Parses the bytes as an object file, or records what they are instead.
    fn object<'data>(&mut self, bytes: &'data [u8]) -> Option<object::File<'data>> {
        let name = &self.name;
        if bytes.is_empty() {
            self.report.format = Some(FileFormat::Empty);
            self.report.error_finding(
                FindingCode::NotAnObject,
                format!(
                    "`{name}` is empty (0 bytes), not a shared library; rebuild the plugin and check the library the build produced"
                ),
            );
            return None;
        }
        use object::FileKind as K;
        let kind = object::FileKind::parse(bytes).ok();
        let (format, not_object) = match kind {
            Some(K::Elf32 | K::Elf64) => (FileFormat::Elf, None),
            Some(K::Pe32 | K::Pe64) => (FileFormat::Pe, None),
            Some(K::MachO32 | K::MachO64) => (FileFormat::MachO, None),
            Some(K::Coff | K::CoffBig) => (FileFormat::Coff, None),
            Some(K::Xcoff32 | K::Xcoff64) => (
                FileFormat::Xcoff,
                Some(format!(
                    "`{name}` is an XCOFF (AIX) object; Backworks plugins are ELF, PE or Mach-O shared libraries"
                )),
            ),
            Some(K::Archive) => (FileFormat::Archive, Some(archive_message(name))),
            Some(K::MachOFat32 | K::MachOFat64) => (
                FileFormat::MachOUniversal,
                Some(format!(
                    "`{name}` is a universal (fat) Mach-O binary; check each architecture on its own (`lipo -thin arm64 -output <file> {name}`)"
                )),
            ),
            Some(K::DyldCache) => (
                FileFormat::DyldCache,
                Some(format!(
                    "`{name}` is a dyld shared cache, not a plugin library"
                )),
            ),
            Some(K::CoffImport) => (
                FileFormat::CoffImport,
                Some(format!(
                    "`{name}` is a Windows import library member, not a DLL; check the `.dll` itself"
                )),
            ),
            Some(_) | None => self.sniff(bytes),
        };
        self.report.format = Some(format);
        if let Some(message) = not_object {
            self.report.error_finding(FindingCode::NotAnObject, message);
            return None;
        }
        match object::File::parse(bytes) {
            Ok(object) => Some(object),
            Err(error) => {
                self.report.error_finding(
                    FindingCode::MalformedObject,
                    format!(
                        "`{name}` starts like a{} {} file but cannot be parsed ({error}): it is truncated or corrupt; rebuild it or download it again",
                        if format == FileFormat::Elf { "n" } else { "" },
                        format.describe()
                    ),
                );
                None
            }
        }
    }

    /// What bytes that `object` does not recognise are: a short or damaged
    /// object file (by its magic), WebAssembly, text, or unknown.
    fn sniff(&self, bytes: &[u8]) -> (FileFormat, Option<String>) {
        let name = &self.name;
        let starts = |magic: &[u8]| bytes.starts_with(magic);
        if starts(b"\x7fELF") {
            return (FileFormat::Elf, None);
        }
        if [
            &[0xfe, 0xed, 0xfa, 0xce][..],
            &[0xce, 0xfa, 0xed, 0xfe],
            &[0xfe, 0xed, 0xfa, 0xcf],
            &[0xcf, 0xfa, 0xed, 0xfe],
        ]
        .iter()
        .any(|magic| starts(magic))
        {
            return (FileFormat::MachO, None);
        }
        if starts(b"MZ") {
            return (FileFormat::Pe, None);
        }
        if starts(b"\0asm") {
            return (
                FileFormat::Wasm,
                Some(format!(
                    "`{name}` is a WebAssembly module; Backworks plugins are native shared libraries (ELF, PE or Mach-O): build the plugin for a native target, not wasm32"
                )),
            );
        }
        if starts(b"!<arch>\n") {
            return (FileFormat::Archive, Some(archive_message(name)));
        }
        let head = &bytes[..bytes.len().min(4096)];
        let text = match std::str::from_utf8(head) {
            Ok(text) => Some(text),
            // A multi-byte character cut at the end of the window.
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
            Err(_) => None,
        };
        if text.is_some_and(|t| {
            !t.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))
        }) {
            return (
                FileFormat::Text,
                Some(format!(
                    "`{name}` is a text file, not a shared library; pass the plugin's .so, .dll or .dylib (as built in `target/<profile>/`)"
                )),
            );
        }
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        (
            FileFormat::Unknown,
            Some(format!(
                "`{name}` is not an ELF, PE or Mach-O file (it starts with bytes {}); pass the plugin's .so, .dll or .dylib",
                head.join(" ")
            )),
        )
    }

    /// Records format, architecture, byte order, OS and kind; returns the
    /// facts for target checks, or `None` when the format is not one a
    /// plugin can be in.
    fn describe(&mut self, object: &object::File<'_>, bytes: &[u8]) -> Option<Facts> {
        let name = self.name.clone();
        let endianness = if object.is_little_endian() {
            Endianness::Little
        } else {
            Endianness::Big
        };
        let pointer_width = if object.is_64() { 64 } else { 32 };
        let os = os_of(object, bytes);
        let kind = kind_of(object);
        let report = &mut *self.report;
        report.architecture = Some(target::architecture_name(object.architecture()));
        report.endianness = Some(endianness);
        report.pointer_width = Some(pointer_width);
        report.os = os.map(str::to_owned);
        report.kind = Some(kind);
        let (min_os_version, install_name) = match object {
            object::File::MachO32(file) => macho_details(file),
            object::File::MachO64(file) => macho_details(file),
            _ => (None, None),
        };
        report.min_os_version = min_os_version;
        report.install_name = install_name.clone();
        // What the dynamic loader needs of the system: shared libraries only.
        report.floor = match object {
            object::File::Elf32(_)
            | object::File::Elf64(_)
            | object::File::MachO32(_)
            | object::File::MachO64(_)
                if kind == ObjectKind::SharedLibrary =>
            {
                Some(floor::of_object(object))
            }
            _ => None,
        };
        report.description = Some(report.describe_file());
        if let Some(install_name) = install_name.filter(|n| n.starts_with('/')) {
            report.finding(
                FindingCode::AbsoluteInstallName,
                Severity::Warning,
                format!(
                    "`{name}` has the install name `{install_name}`, the absolute path it was linked at, which programs linking against it will look for: link with `-Wl,-install_name,@rpath/<file>` (`cargo backworks build` does)"
                ),
            );
        }
        if kind != ObjectKind::SharedLibrary {
            let what = match (kind, report.format) {
                (ObjectKind::Executable, Some(FileFormat::Elf))
                    if object.kind() == object::ObjectKind::Dynamic =>
                {
                    "a position-independent executable"
                }
                (ObjectKind::Executable, _) => "an executable",
                (ObjectKind::Relocatable, _) => {
                    "a relocatable object file (compiler output before linking)"
                }
                (ObjectKind::Core, _) => "a core dump",
                _ => "an object file of an unknown kind",
            };
            report.error_finding(
                FindingCode::NotASharedLibrary,
                format!(
                    "`{name}` is {what}, not a shared library; build the plugin with `crate-type = [\"cdylib\"]` (C: link with `cc -shared`)"
                ),
            );
        }
        Some(Facts {
            format: report.format?.plugin_format()?,
            architecture: object.architecture(),
            endianness,
            os,
            pointer_width,
        })
    }

    /// What the dynamic loader needs to map a shared library besides its
    /// type: ELF program headers with at least one `PT_LOAD` and a
    /// `PT_DYNAMIC` (`dlopen` reads neither the section table nor
    /// `.dynsym` through it); a Mach-O segment; a PE section.
    fn loadable_findings(&mut self, object: &object::File<'_>) {
        let name = &self.name;
        let missing = match object {
            object::File::Elf32(file) => elf_missing_segments(file),
            object::File::Elf64(file) => elf_missing_segments(file),
            object::File::MachO32(_) | object::File::MachO64(_) => {
                if object.segments().next().is_none() {
                    vec!["segment (`LC_SEGMENT` or `LC_SEGMENT_64` load command)"]
                } else {
                    Vec::new()
                }
            }
            object::File::Pe32(_) | object::File::Pe64(_) => {
                if object.sections().next().is_none() {
                    vec!["section"]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        if missing.is_empty() {
            return;
        }
        let how = match object {
            object::File::Elf32(file) => {
                format!(
                    "it has {} program headers; ",
                    file.elf_program_headers().len()
                )
            }
            object::File::Elf64(file) => {
                format!(
                    "it has {} program headers; ",
                    file.elf_program_headers().len()
                )
            }
            _ => String::new(),
        };
        self.report.error_finding(
            FindingCode::NotLoadable,
            format!(
                "`{name}` has no {}: {how}the dynamic loader refuses a library without them; the file was damaged, or rewritten by a tool that dropped them: rebuild the plugin with `cargo backworks build` (C: link with `cc -shared`)",
                missing.join(" and no ")
            ),
        );
    }

    fn symbol_findings(&mut self, exports: &ExportsReport, no_record: bool) {
        let name = &self.name;
        for (symbol, report, role) in [
            (
                PLUGIN_INFO_SYMBOL,
                &exports.plugin_info,
                "`PluginInfo plugin_info(void)`",
            ),
            (
                PLUGIN_VTABLE_SYMBOL,
                &exports.plugin_vtable,
                "`PluginVTable plugin_vtable(void)`",
            ),
        ] {
            match report.kind {
                None => self.report.error_finding(
                    FindingCode::MissingSymbol,
                    format!(
                        "`{symbol}` is not exported by `{name}`; the host calls it: use `export_plugin!` (Rust) or define {role} (C, see examples/c-plugin/weather.c)"
                    ),
                ),
                Some(SymbolKind::Function) => {}
                Some(kind) => self.report.error_finding(
                    FindingCode::SymbolNotAFunction,
                    format!(
                        "`{symbol}` is exported by `{name}` as {}{}, not as a function; the host calls it: define it as the function {role}, not as a variable",
                        article(kind),
                        in_section(report)
                    ),
                ),
            }
        }
        let report = &exports.backworks_plugin_metadata;
        match report.kind {
            // No record at all is one finding (no-metadata), not two.
            None if no_record => {}
            None => self.report.error_finding(
                FindingCode::MissingSymbol,
                format!(
                    "`{METADATA_SYMBOL}` is not exported by `{name}`; the host reads the record from memory through it: declare it with `BACKWORKS_DECLARE_METADATA` (C) or `export_plugin!` (Rust)"
                ),
            ),
            Some(SymbolKind::Data) => {}
            Some(kind) => self.report.error_finding(
                FindingCode::SymbolNotData,
                format!(
                    "`{METADATA_SYMBOL}` is exported by `{name}` as {}{}, not as data; it must be the constant metadata record: declare it with `BACKWORKS_DECLARE_METADATA` (C) or `export_plugin!` (Rust)",
                    article(kind),
                    in_section(report)
                ),
            ),
        }
    }

    /// Checks the record; returns it when it parsed.
    fn metadata_findings(
        &mut self,
        record: Result<inspect::LocatedRecord<'_>, InspectError>,
        facts: Facts,
    ) -> Option<PluginMetadata> {
        let name = self.name.clone();
        let record = match record {
            Ok(record) => record,
            Err(InspectError::NoRecord) => {
                self.report.error_finding(
                    FindingCode::NoMetadata,
                    format!(
                        "`{name}` has no Backworks metadata record (neither section `.bwmeta` / `__DATA,__bwmeta` nor symbol `{METADATA_SYMBOL}`); build the plugin with `export_plugin!` (Rust) or `BACKWORKS_DECLARE_METADATA` (C)"
                    ),
                );
                return None;
            }
            Err(error) => {
                self.report
                    .error_finding(FindingCode::InvalidMetadata, format!("`{name}`: {error}"));
                return None;
            }
        };
        let place = &record.place;
        let header = match metadata::parse_header(record.bytes) {
            Ok(header) => header,
            Err(error) => {
                self.report.error_finding(
                    FindingCode::InvalidMetadata,
                    format!(
                        "the metadata record in {place} of `{name}` is invalid: {error}; rebuild the plugin with a current backworks-plugin-sdk (C: declare the record with `BACKWORKS_DECLARE_METADATA`)"
                    ),
                );
                return None;
            }
        };
        let parsed = metadata::parse(record.bytes);
        let abi = header.abi_version;
        let supported = SUPPORTED_ABI.contains(&abi);
        if !supported {
            let fix = if abi < *SUPPORTED_ABI.start() {
                String::from("rebuild the plugin with a current backworks-plugin-sdk")
            } else {
                format!(
                    "upgrade cargo-backworks, or use a plugin release built for ABI {}",
                    supported_abi_text()
                )
            };
            self.report.error_finding(
                FindingCode::UnsupportedAbi,
                format!(
                    "`{name}` is built for plugin ABI v{abi}, which this tool does not support (it supports {}); {fix}",
                    supported_abi_text()
                ),
            );
        }
        let metadata = match parsed {
            Ok(metadata) => metadata,
            Err(error) => {
                // A record of another ABI may have a layout v1 cannot read:
                // the unsupported-abi finding already says why.
                if supported {
                    self.report.error_finding(
                        FindingCode::InvalidMetadata,
                        format!(
                            "the metadata record in {place} of `{name}` is invalid: {error}; rebuild the plugin with a current backworks-plugin-sdk (C: declare the record with `BACKWORKS_DECLARE_METADATA`)"
                        ),
                    );
                }
                return None;
            }
        };
        if supported {
            let pointer = u32::from(facts.pointer_width / 8);
            let bits = facts.pointer_width;
            let rebuild = "the plugin was built against a different ABI layout: rebuild it with a current backworks-plugin-sdk (C: use an unmodified backworks.h)";
            let expected = 3 * pointer + 8;
            if header.info_size != expected {
                self.report.error_finding(
                    FindingCode::StructSizeMismatch,
                    format!(
                        "the metadata record of `{name}` declares `info_size` = {}, but `PluginInfo` is {expected} bytes on this {bits}-bit file (3 × pointer + 8); {rebuild}",
                        header.info_size
                    ),
                );
            }
            let revision = header.abi_revision();
            let declared = header.vtable_size;
            match metadata::vtable_entries(revision, declared, pointer) {
                Ok(_) => {}
                Err(metadata::VTableSizeError::Known {
                    expected, entries, ..
                }) => self.report.error_finding(
                    FindingCode::StructSizeMismatch,
                    format!(
                        "the metadata record of `{name}` declares `vtable_size` = {declared}, but `PluginVTable` of ABI {revision} is {expected} bytes on this {bits}-bit file ({entries} × pointer); {rebuild}"
                    ),
                ),
                Err(metadata::VTableSizeError::Newer { min, max, .. }) => {
                    self.report.error_finding(
                        FindingCode::StructSizeMismatch,
                        format!(
                            "the metadata record of `{name}` declares `vtable_size` = {declared} for ABI {revision}, newer than this tool knows ({}); a table of a newer revision is a whole number of pointers from {min} to {max} bytes on this {bits}-bit file; {rebuild}",
                            metadata::AbiRevision::NEWEST
                        ),
                    )
                }
                Err(other) => self.report.error_finding(
                    FindingCode::StructSizeMismatch,
                    format!("the metadata record of `{name}`: {other}; {rebuild}"),
                ),
            }
        }
        if metadata.panic_aborts() {
            self.report.error_finding(
                FindingCode::PanicAbort,
                format!(
                    "`{name}` was built with `panic = \"abort\"`: a panic in it would end the host, so hosts refuse it; remove `panic = \"abort\"` from the plugin's Cargo profile"
                ),
            );
        }
        self.report.metadata = Some(MetadataReport {
            metadata: metadata.clone(),
            location: record.place,
        });
        Some(metadata)
    }

    fn target_findings(&mut self, metadata: &PluginMetadata, facts: Facts) {
        let name = &self.name;
        let record_order = endianness_of(metadata.header.byte_order);
        if record_order != facts.endianness {
            self.report.error_finding(
                FindingCode::TargetMismatch,
                format!(
                    "the metadata record of `{name}` is {record_order} but the file is {}: the record was not compiled for this file's target; rebuild the plugin",
                    facts.endianness
                ),
            );
        }
        let triple = &metadata.target;
        if !target::is_triple_shaped(triple) {
            // Not a triple at all (a path, say): no target has that name,
            // and a registry would use it as a directory name.
            self.report.error_finding(
                FindingCode::UnknownTarget,
                format!(
                    "the metadata record of `{name}` names target {triple:?}, which is not a target triple (2 to 4 `-`-separated parts of lower-case letters, digits, `_` and `.`); rebuild the plugin with `cargo backworks build --target <triple>`"
                ),
            );
            return;
        }
        let Some(target) = target::parse(triple) else {
            self.report.finding(
                FindingCode::UnknownTarget,
                Severity::Warning,
                format!(
                    "the metadata record of `{name}` names target `{triple}`, which this tool does not know; its format and architecture were not compared with the file's, and a registry refuses to publish it"
                ),
            );
            return;
        };
        let differences = facts.differences(&target);
        if !differences.is_empty() {
            self.report.error_finding(
                FindingCode::TargetMismatch,
                format!(
                    "the metadata record of `{name}` says target `{triple}`, but the file has {}; the record must name the target the library was built for: rebuild with `cargo backworks build --target {triple}` (C: leave `BACKWORKS_TARGET` to backworks.h or define it correctly)",
                    differences.join(", ")
                ),
            );
        }
    }

    fn file_name_findings(
        &mut self,
        metadata: Option<&PluginMetadata>,
        facts: Facts,
        shared: bool,
    ) {
        let name = self.name.clone();
        let path = Path::new(&name);
        let extension = path.extension().and_then(|e| e.to_str());
        if let Some((package, name_target)) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(target::split_dist_file_name)
        {
            match metadata {
                Some(m) => {
                    if name_target != m.target {
                        let expected = dist_file_name(m, facts.format);
                        self.report.error_finding(
                            FindingCode::TargetMismatch,
                            format!(
                                "the file name `{name}` says target `{name_target}` but the metadata record says `{}`; rename the file to `{expected}`",
                                m.target
                            ),
                        );
                    }
                    let expected_package = format!("{}-{}", m.name, m.version);
                    if package != expected_package {
                        let expected = dist_file_name(m, facts.format);
                        self.report.finding(
                            FindingCode::FileNameMismatch,
                            Severity::Warning,
                            format!(
                                "the file name `{name}` says `{package}` but the metadata record says {} {}; rename the file to `{expected}`",
                                m.name, m.version
                            ),
                        );
                    }
                }
                None => {
                    if let Some(target) = target::parse(name_target) {
                        let differences = facts.differences(&target);
                        if !differences.is_empty() {
                            self.report.error_finding(
                                FindingCode::TargetMismatch,
                                format!(
                                    "the file name `{name}` says target `{name_target}`, but the file has {}; rename it or rebuild it for that target",
                                    differences.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
        if !shared {
            return;
        }
        let Some(expected) = facts.format.dylib_extension() else {
            return;
        };
        match extension {
            Some(ext) if ext.eq_ignore_ascii_case(expected) => {}
            Some(ext) if Format::from_dylib_extension(ext).is_some() => {
                self.report.error_finding(
                    FindingCode::ExtensionMismatch,
                    format!(
                        "`{name}` is an {} shared library but its extension `.{ext}` is for {} libraries; rename it to end in `.{expected}`",
                        facts.format,
                        Format::from_dylib_extension(ext).map_or_else(String::new, |f| f.to_string())
                    ),
                );
            }
            other => {
                let has = other.map_or_else(
                    || String::from("has no extension"),
                    |ext| format!("has extension `.{ext}`"),
                );
                self.report.finding(
                    FindingCode::ExtensionMismatch,
                    Severity::Warning,
                    format!(
                        "`{name}` {has}; an {} plugin library should end in `.{expected}`",
                        facts.format
                    ),
                );
            }
        }
    }
}

fn archive_message(name: &str) -> String {
    format!(
        "`{name}` is a static library archive (`ar`), not a shared library; build the plugin with `crate-type = [\"cdylib\"]` (C: link with `cc -shared`)"
    )
}

/// `<name>-<version>-<target>.<extension>`.
fn dist_file_name(metadata: &PluginMetadata, format: Format) -> String {
    let extension = target::parse(&metadata.target)
        .and_then(|t| t.dylib_extension())
        .or(format.dylib_extension())
        .unwrap_or("so");
    format!(
        "{}-{}-{}.{extension}",
        metadata.name, metadata.version, metadata.target
    )
}

/// Reads the export table and the three ABI symbols in it.
fn read_exports(object: &object::File<'_>) -> Result<ExportsReport, InspectError> {
    let mut report = ExportsReport::default();
    let count = inspect::for_each_export(object, |export| {
        let slot = match export.name {
            Some(name) if name == PLUGIN_INFO_SYMBOL.as_bytes() => &mut report.plugin_info,
            Some(name) if name == PLUGIN_VTABLE_SYMBOL.as_bytes() => &mut report.plugin_vtable,
            Some(name) if name == METADATA_SYMBOL.as_bytes() => {
                &mut report.backworks_plugin_metadata
            }
            _ => return,
        };
        if !slot.exported {
            *slot = classify(object, &export);
        }
    })?;
    report.count = count;
    Ok(report)
}

/// What an exported symbol refers to: by its ELF type when it has one, else
/// by the section holding its address.
fn classify(object: &object::File<'_>, export: &ExportedSymbol<'_>) -> SymbolReport {
    use object::ExportTarget as T;
    let (kind, address) = match export.target {
        T::Address { address } => (None, Some(address)),
        T::Absolute { .. } => (Some(SymbolKind::Absolute), None),
        T::Tls { .. } => (Some(SymbolKind::ThreadLocal), None),
        T::TlvDescriptor { address } => (Some(SymbolKind::ThreadLocal), Some(address)),
        T::Resolver { resolver, stub } => {
            (Some(SymbolKind::Function), Some(stub.unwrap_or(resolver)))
        }
        T::Reexport { .. } => (Some(SymbolKind::Reexport), None),
        _ => (Some(SymbolKind::Unknown), None),
    };
    let section = address.and_then(|address| containing_section(object, address));
    let elf_kind = match export.flags {
        object::ExportFlags::Elf { st_info, .. } => {
            let st_type = st_info.st_type();
            if st_type == object::elf::STT_FUNC || st_type == object::elf::STT_GNU_IFUNC {
                Some(SymbolKind::Function)
            } else if st_type == object::elf::STT_OBJECT || st_type == object::elf::STT_COMMON {
                Some(SymbolKind::Data)
            } else if st_type == object::elf::STT_TLS {
                Some(SymbolKind::ThreadLocal)
            } else {
                None
            }
        }
        _ => None,
    };
    let by_section = section.as_ref().map(|(kind, _)| match kind {
        object::SectionKind::Text => SymbolKind::Function,
        object::SectionKind::Tls
        | object::SectionKind::UninitializedTls
        | object::SectionKind::TlsVariables => SymbolKind::ThreadLocal,
        _ => SymbolKind::Data,
    });
    SymbolReport {
        exported: true,
        kind: Some(
            kind.or(elf_kind)
                .or(by_section)
                .unwrap_or(SymbolKind::Unknown),
        ),
        address,
        section: section.map(|(_, name)| name),
    }
}

/// The code or data section (kind and name) whose addresses include
/// `address`.
fn containing_section(
    object: &object::File<'_>,
    address: u64,
) -> Option<(object::SectionKind, String)> {
    use object::SectionKind as K;
    object.sections().find_map(|section| {
        let kind = section.kind();
        let loaded = matches!(
            kind,
            K::Text
                | K::Data
                | K::ReadOnlyData
                | K::ReadOnlyDataWithRel
                | K::ReadOnlyString
                | K::UninitializedData
                | K::Tls
                | K::UninitializedTls
                | K::TlsVariables
                | K::OtherString
        );
        let inside = address
            .checked_sub(section.address())
            .is_some_and(|offset| offset < section.size());
        (loaded && inside).then(|| {
            let name = section.name().unwrap_or("?");
            let name = match section.segment_name().ok().flatten() {
                Some(segment) if object.format() == object::BinaryFormat::MachO => {
                    format!("{segment},{name}")
                }
                _ => name.to_owned(),
            };
            (kind, name)
        })
    })
}

/// The program headers an ELF shared library lacks, of the two `dlopen`
/// needs: a `PT_LOAD` (what to map) and a `PT_DYNAMIC` (symbols,
/// relocations, dependencies).
fn elf_missing_segments<Elf: object::read::elf::FileHeader<Endian = object::Endianness>>(
    file: &object::read::elf::ElfFile<'_, Elf>,
) -> Vec<&'static str> {
    use object::read::elf::ProgramHeader;
    let endian = file.endian();
    let has = |kind: object::elf::ProgramType| {
        file.elf_program_headers()
            .iter()
            .any(|header| header.p_type(endian) == kind)
    };
    let mut missing = Vec::new();
    if !has(object::elf::PT_LOAD) {
        missing.push("loadable segment (`PT_LOAD` program header)");
    }
    if !has(object::elf::PT_DYNAMIC) {
        missing.push("dynamic segment (`PT_DYNAMIC` program header)");
    }
    missing
}

/// The kind of object file; an ELF `ET_DYN` with `DF_1_PIE` is an
/// executable.
fn kind_of(object: &object::File<'_>) -> ObjectKind {
    match object.kind() {
        object::ObjectKind::Dynamic if is_pie(object) => ObjectKind::Executable,
        object::ObjectKind::Dynamic => ObjectKind::SharedLibrary,
        object::ObjectKind::Executable => ObjectKind::Executable,
        object::ObjectKind::Relocatable => ObjectKind::Relocatable,
        object::ObjectKind::Core => ObjectKind::Core,
        _ => ObjectKind::Unknown,
    }
}

fn is_pie(object: &object::File<'_>) -> bool {
    fn flags_1<Elf: object::read::elf::FileHeader<Endian = object::Endianness>>(
        file: &object::read::elf::ElfFile<'_, Elf>,
    ) -> bool {
        use object::read::elf::Dyn;
        let endian = file.endian();
        match file.elf_section_table().dynamic(endian, file.data()) {
            Ok(Some((entries, _))) => entries.iter().any(|entry| {
                entry.tag(endian) == object::elf::DT_FLAGS_1
                    && entry.val(endian) & object::elf::DF_1_PIE.0 != 0
            }),
            _ => false,
        }
    }
    match object {
        object::File::Elf32(file) => flags_1(file),
        object::File::Elf64(file) => flags_1(file),
        _ => false,
    }
}

/// The OS a file records: ELF `EI_OSABI` or its `.note.ABI-tag` /
/// `.note.android.ident`; PE: Windows (UEFI for EFI subsystems); Mach-O: the
/// platform of `LC_BUILD_VERSION` or `LC_VERSION_MIN_*`. `None` when the file
/// does not say (most Linux shared libraries: `EI_OSABI` is System V).
fn os_of(object: &object::File<'_>, bytes: &[u8]) -> Option<&'static str> {
    match object {
        object::File::Elf32(_) | object::File::Elf64(_) => elf_os(object, bytes),
        object::File::Pe32(file) => Some(pe_os(file)),
        object::File::Pe64(file) => Some(pe_os(file)),
        object::File::MachO32(file) => macho_os(file),
        object::File::MachO64(file) => macho_os(file),
        _ => None,
    }
}

fn elf_os(object: &object::File<'_>, bytes: &[u8]) -> Option<&'static str> {
    // EI_OSABI, byte 7 of the identification.
    match bytes.get(7)? {
        2 => return Some("netbsd"),
        3 => return Some("linux"),
        6 => return Some("solaris"),
        9 => return Some("freebsd"),
        12 => return Some("openbsd"),
        _ => {}
    }
    if object.section_by_name(".note.android.ident").is_some() {
        return Some("android");
    }
    // The GNU ABI tag note: namesz, descsz, type 1, "GNU\0", then the OS.
    let note = object.section_by_name(".note.ABI-tag")?.data().ok()?;
    let word = |at: usize| {
        let bytes: [u8; 4] = note.get(at..at + 4)?.try_into().ok()?;
        Some(if object.is_little_endian() {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    };
    if word(0)? != 4 || word(8)? != 1 || note.get(12..16)? != b"GNU\0" {
        return None;
    }
    match word(16)? {
        0 => Some("linux"),
        1 => Some("hurd"),
        2 => Some("solaris"),
        3 => Some("freebsd"),
        _ => None,
    }
}

fn pe_os<Pe: object::read::pe::ImageNtHeaders>(
    file: &object::read::pe::PeFile<'_, Pe>,
) -> &'static str {
    use object::read::pe::ImageOptionalHeader;
    match file.nt_headers().optional_header().subsystem().0 {
        10..=13 => "uefi",
        _ => "windows",
    }
}

fn macho_os<Mach: object::read::macho::MachHeader<Endian = object::Endianness>>(
    file: &object::read::macho::MachOFile<'_, Mach>,
) -> Option<&'static str> {
    let endian = file.endian();
    let mut commands = file.macho_load_commands().ok()?;
    let mut fallback = None;
    while let Ok(Some(command)) = commands.next() {
        if let Ok(Some((build, _))) = command.build_version(endian) {
            return match build.platform.get(endian).0 {
                1 => Some("macos"),
                2 | 6 | 7 => Some("ios"),
                3 | 8 => Some("tvos"),
                4 | 9 => Some("watchos"),
                11 | 12 => Some("visionos"),
                _ => None,
            };
        }
        fallback = fallback.or(match command.cmd().0 {
            0x24 => Some("macos"),
            0x25 => Some("ios"),
            0x2f => Some("tvos"),
            0x30 => Some("watchos"),
            _ => None,
        });
    }
    fallback
}

/// A Mach-O file's minimum OS version (`LC_BUILD_VERSION` or
/// `LC_VERSION_MIN_*`, as `11.0` or `10.12.1`) and install name
/// (`LC_ID_DYLIB`).
fn macho_details<Mach: object::read::macho::MachHeader<Endian = object::Endianness>>(
    file: &object::read::macho::MachOFile<'_, Mach>,
) -> (Option<String>, Option<String>) {
    use object::read::macho::LoadCommandVariant;
    let endian = file.endian();
    let (mut version, mut install_name) = (None, None);
    let Ok(mut commands) = file.macho_load_commands() else {
        return (None, None);
    };
    while let Ok(Some(command)) = commands.next() {
        match command.variant() {
            Ok(LoadCommandVariant::BuildVersion(build, _)) => {
                version = Some(build.minos.get(endian).0);
            }
            Ok(LoadCommandVariant::VersionMin(min)) => {
                version = version.or(Some(min.version.get(endian).0));
            }
            Ok(LoadCommandVariant::IdDylib(dylib)) => {
                install_name = command
                    .string(endian, dylib.dylib.name)
                    .ok()
                    .map(|name| String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
    }
    let version = version.map(|v| {
        let (major, minor, patch) = (v >> 16, (v >> 8) & 0xff, v & 0xff);
        if patch == 0 {
            format!("{major}.{minor}")
        } else {
            format!("{major}.{minor}.{patch}")
        }
    });
    (version, install_name)
}

fn endianness_of(order: ByteOrder) -> Endianness {
    match order {
        ByteOrder::Little => Endianness::Little,
        ByteOrder::Big => Endianness::Big,
    }
}

fn supported_abi_text() -> String {
    let (min, max) = (SUPPORTED_ABI.start(), SUPPORTED_ABI.end());
    if min == max {
        format!("v{min}")
    } else {
        format!("v{min} to v{max}")
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn article(kind: SymbolKind) -> String {
    match kind {
        SymbolKind::Absolute => String::from("an absolute value"),
        SymbolKind::Unknown => String::from("a symbol of unknown kind"),
        SymbolKind::Reexport => String::from("a re-export of another library's symbol"),
        SymbolKind::ThreadLocal => String::from("a thread-local variable"),
        SymbolKind::Data => String::from("data"),
        SymbolKind::Function => String::from("a function"),
    }
}

fn in_section(report: &SymbolReport) -> String {
    report
        .section
        .as_ref()
        .map_or_else(String::new, |section| format!(" (in section `{section}`)"))
}

#[cfg(test)]
mod tests;
