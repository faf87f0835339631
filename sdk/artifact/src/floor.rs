//! A plugin library's platform floor: the oldest system that can load it,
//! read from its bytes before anything loads it.
//!
//! - ELF: the newest glibc release any of its version needs
//!   (`.gnu.version_r`) names, `GLIBC_2.34` being glibc 2.34, whatever glibc
//!   library the need is of (`libc.so.6`, `libm.so.6`, `libpthread.so.0`,
//!   `ld-linux-x86-64.so.2`, ...). Versions compare as numbers (2.9 is older
//!   than 2.17). Names that are not a release (`GLIBC_PRIVATE`,
//!   `GLIBC_ABI_DT_RELR`) are ignored and listed as ignored. A version-needs
//!   section that cannot be read makes the glibc floor unknown, with the
//!   reason.
//! - Mach-O: the minimum macOS of `LC_BUILD_VERSION` (platform macOS) or
//!   `LC_VERSION_MIN_MACOSX`.
//!
//! [`FloorReport`] is what `check` reports; [`PlatformFloor`] the two
//! versions alone, as the registry records them per artifact. The host
//! compares [`FloorReport::glibc`] with the glibc it runs on before it loads
//! a plugin.

use std::fmt;
use std::str::FromStr;

use object::read::elf::{ElfFile, FileHeader};
use object::read::macho::{LoadCommandVariant, MachHeader, MachOFile};
use serde::{Deserialize, Serialize};

/// At most this many version-need entries are read from one file: real
/// libraries have a few dozen; a corrupt section whose entries point back
/// into themselves would otherwise be walked for a long time.
const MAX_NEEDS: usize = 4096;

/// A version number of up to three parts (`2.34`, `2.2.5`, `10.12.1`),
/// compared numerically part by part; a missing part is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    major: u32,
    minor: u32,
    patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses one to three dot-separated decimal numbers (`2`, `2.34`,
    /// `2.2.5`); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = [0u32; 3];
        for (count, part) in text.split('.').enumerate() {
            if count == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[count] = part.parse().ok()?;
        }
        Some(Self::new(parts[0], parts[1], parts[2]))
    }
}

impl fmt::Display for Version {
    /// `2.34`, or `2.2.5` when the third part is not 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.patch != 0 {
            write!(f, ".{}", self.patch)?;
        }
        Ok(())
    }
}

/// A text that is not a version number of one to three parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a version: write one to three dot-separated numbers, such as `2.17` or `10.13`"
)]
pub struct VersionError(String);

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or_else(|| VersionError(text.to_owned()))
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The newest glibc release a library needs, and the need that says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlibcNeed {
    /// The release: `2.34`.
    pub version: Version,
    /// The version need as the file names it: `GLIBC_2.34`.
    pub symbol_version: String,
    /// The library it is needed of: `libc.so.6`.
    pub library: String,
}

impl fmt::Display for GlibcNeed {
    /// `glibc 2.34 (symbol version GLIBC_2.34 of libc.so.6)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "glibc {} (symbol version {} of {})",
            self.version, self.symbol_version, self.library
        )
    }
}

/// A `GLIBC_*` version need that names no release (`GLIBC_PRIVATE`), left
/// out of the floor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredNeed {
    /// The version need: `GLIBC_PRIVATE`.
    pub symbol_version: String,
    /// The library it is needed of.
    pub library: String,
}

/// The oldest system a library can be loaded on, as far as its bytes say:
/// what `check` reports (`floor` in its JSON, `docs/check.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FloorReport {
    /// ELF: the newest glibc release needed; `None` when the file needs no
    /// versioned glibc symbol (or is not ELF, or its needs are unreadable).
    pub glibc: Option<GlibcNeed>,
    /// ELF: `GLIBC_*` needs that name no release, ignored.
    pub glibc_ignored: Vec<IgnoredNeed>,
    /// ELF: why the version needs could not be read; the glibc floor is
    /// then unknown.
    pub glibc_unknown: Option<String>,
    /// Mach-O: the minimum macOS version the library declares.
    pub macos: Option<Version>,
}

impl FloorReport {
    /// The versions alone, as a registry records them.
    pub fn floor(&self) -> PlatformFloor {
        PlatformFloor {
            glibc: self.glibc.as_ref().map(|need| need.version),
            macos: self.macos,
        }
    }

    /// The text of `check`'s `floor:` line, or `None` when there is
    /// nothing to say (not ELF or Mach-O).
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(need) = &self.glibc {
            parts.push(need.to_string());
        }
        if let Some(reason) = &self.glibc_unknown {
            parts.push(format!("glibc unknown ({reason})"));
        }
        if !self.glibc_ignored.is_empty() {
            let ignored: Vec<String> = self
                .glibc_ignored
                .iter()
                .map(|n| format!("{} of {}", n.symbol_version, n.library))
                .collect();
            parts.push(format!("ignored {} (not a release)", ignored.join(", ")));
        }
        if let Some(macos) = self.macos {
            parts.push(format!("macOS {macos}"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The floor versions of one artifact, as the registry's index records
/// them (`docs/registry.md`): absent fields are not recorded (an older
/// registry, or nothing needed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFloor {
    /// The newest glibc release the library needs (ELF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glibc: Option<Version>,
    /// The minimum macOS version (Mach-O).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macos: Option<Version>,
}

impl PlatformFloor {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.glibc.is_none() && self.macos.is_none()
    }
}

impl fmt::Display for PlatformFloor {
    /// `glibc 2.34`, `macOS 11.0`, or `none recorded`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.glibc, self.macos) {
            (Some(glibc), Some(macos)) => write!(f, "glibc {glibc}, macOS {macos}"),
            (Some(glibc), None) => write!(f, "glibc {glibc}"),
            (None, Some(macos)) => write!(f, "macOS {macos}"),
            (None, None) => f.write_str("none recorded"),
        }
    }
}

/// The floor of an object file already parsed. Never panics.
pub fn of_object(object: &object::File<'_>) -> FloorReport {
    let mut report = FloorReport::default();
    let glibc = match object {
        object::File::Elf32(file) => Some(elf_glibc(file)),
        object::File::Elf64(file) => Some(elf_glibc(file)),
        object::File::MachO32(file) => {
            report.macos = macos_minimum(file);
            None
        }
        object::File::MachO64(file) => {
            report.macos = macos_minimum(file);
            None
        }
        _ => None,
    };
    match glibc {
        Some(Ok((need, ignored))) => {
            report.glibc = need;
            report.glibc_ignored = ignored;
        }
        Some(Err(reason)) => report.glibc_unknown = Some(reason),
        None => {}
    }
    report
}

/// The floor of a library's bytes; the default (nothing known) when they
/// are not an object file. Never panics.
pub fn of_bytes(bytes: &[u8]) -> FloorReport {
    object::File::parse(bytes)
        .map(|object| of_object(&object))
        .unwrap_or_default()
}

type GlibcNeeds = (Option<GlibcNeed>, Vec<IgnoredNeed>);

/// The newest `GLIBC_x.y[.z]` of the version needs, and the `GLIBC_*`
/// needs that name no release; Err: why `.gnu.version_r` is unreadable.
fn elf_glibc<Elf: FileHeader<Endian = object::Endianness>>(
    file: &ElfFile<'_, Elf>,
) -> Result<GlibcNeeds, String> {
    let unreadable = |e: object::Error| format!("`.gnu.version_r` is unreadable: {e}");
    let (endian, data) = (file.endian(), file.data());
    let sections = file.elf_section_table();
    let Some((mut needs, link)) = sections.gnu_verneed(endian, data).map_err(unreadable)? else {
        return Ok((None, Vec::new()));
    };
    let strings = sections.strings(endian, data, link).map_err(unreadable)?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (mut newest, mut ignored) = (None::<GlibcNeed>, Vec::new());
    let mut count = 0;
    while let Some((need, mut entries)) = needs.next().map_err(unreadable)? {
        let library = need.file(endian, strings).map_err(unreadable)?;
        while let Some(entry) = entries.next().map_err(unreadable)? {
            count += 1;
            if count > MAX_NEEDS {
                return Err(format!(
                    "`.gnu.version_r` has more than {MAX_NEEDS} entries; it is corrupt"
                ));
            }
            let name = entry.name(endian, strings).map_err(unreadable)?;
            let Some(release) = name.strip_prefix(b"GLIBC_") else {
                continue;
            };
            match std::str::from_utf8(release).ok().and_then(Version::parse) {
                Some(version) => {
                    if newest.as_ref().is_none_or(|n| version > n.version) {
                        newest = Some(GlibcNeed {
                            version,
                            symbol_version: text(name),
                            library: text(library),
                        });
                    }
                }
                None => {
                    let need = IgnoredNeed {
                        symbol_version: text(name),
                        library: text(library),
                    };
                    if !ignored.contains(&need) {
                        ignored.push(need);
                    }
                }
            }
        }
    }
    Ok((newest, ignored))
}

/// The minimum macOS of `LC_BUILD_VERSION` (platform macOS) or
/// `LC_VERSION_MIN_MACOSX`; `None` for other platforms or when absent.
fn macos_minimum<Mach: MachHeader<Endian = object::Endianness>>(
    file: &MachOFile<'_, Mach>,
) -> Option<Version> {
    const PLATFORM_MACOS: u32 = 1;
    const LC_VERSION_MIN_MACOSX: u32 = 0x24;
    let endian = file.endian();
    let mut commands = file.macho_load_commands().ok()?;
    let mut minimum = None;
    while let Ok(Some(command)) = commands.next() {
        let packed = match command.variant() {
            Ok(LoadCommandVariant::BuildVersion(build, _))
                if build.platform.get(endian).0 == PLATFORM_MACOS =>
            {
                build.minos.get(endian).0
            }
            Ok(LoadCommandVariant::VersionMin(min)) if command.cmd().0 == LC_VERSION_MIN_MACOSX => {
                min.version.get(endian).0
            }
            _ => continue,
        };
        minimum = Some(Version::new(
            packed >> 16,
            (packed >> 8) & 0xff,
            packed & 0xff,
        ));
    }
    minimum
}

#[cfg(test)]
mod tests;
