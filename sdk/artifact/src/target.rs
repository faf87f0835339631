//! What a Rust target triple says about the shared library built for it:
//! object format, architecture, OS, byte order, pointer width and file
//! extension.
//!
//! `cargo backworks check` compares these with what it reads from a file's
//! headers, to catch a library whose metadata record (or file name) claims
//! one target while its bytes are for another. The mapping follows rustc's
//! target list; a triple whose architecture or OS this module does not know
//! maps to `None`, and callers then skip the comparison rather than guess.

use std::fmt;

use serde::Serialize;

/// An object file format a shared library can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// ELF: Linux, Android, the BSDs, illumos and most other Unix systems.
    Elf,
    /// PE/COFF: Windows (and UEFI).
    Pe,
    /// Mach-O: macOS, iOS and Apple's other systems.
    MachO,
    /// WebAssembly: not a native shared library; plugins cannot target it.
    Wasm,
}

impl Format {
    /// The conventional extension of a shared library in this format,
    /// without the dot (`None` for WebAssembly, which has none).
    pub fn dylib_extension(self) -> Option<&'static str> {
        match self {
            Self::Elf => Some("so"),
            Self::Pe => Some("dll"),
            Self::MachO => Some("dylib"),
            Self::Wasm => None,
        }
    }

    /// The format a shared-library extension (`so`, `dll`, `dylib`, any
    /// case) stands for.
    pub fn from_dylib_extension(extension: &str) -> Option<Self> {
        match extension.to_ascii_lowercase().as_str() {
            "so" => Some(Self::Elf),
            "dll" => Some(Self::Pe),
            "dylib" => Some(Self::MachO),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Elf => "ELF",
            Self::Pe => "PE",
            Self::MachO => "Mach-O",
            Self::Wasm => "WebAssembly",
        })
    }
}

/// Byte order of a target or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endianness {
    /// Least significant byte first.
    Little,
    /// Most significant byte first.
    Big,
}

impl fmt::Display for Endianness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Little => "little-endian",
            Self::Big => "big-endian",
        })
    }
}

/// What a target triple implies about the binaries built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetInfo {
    /// The object format of its shared libraries.
    pub format: Format,
    /// Its architecture, as the `object` crate names it (and as a file's
    /// header reports it).
    pub architecture: object::Architecture,
    /// The OS, with the names `cargo backworks check` reports: `linux`,
    /// `android`, `windows`, `macos`, `ios`, `freebsd`, …; `None` when the
    /// triple names no OS this module knows to compare.
    pub os: Option<&'static str>,
    /// Byte order.
    pub endianness: Endianness,
    /// Pointer width in bits (32 or 64).
    pub pointer_width: u8,
}

impl TargetInfo {
    /// The extension of a shared library for this target, without the dot.
    pub fn dylib_extension(&self) -> Option<&'static str> {
        self.format.dylib_extension()
    }
}

/// Maps a Rust target triple (`x86_64-unknown-linux-gnu`,
/// `aarch64-apple-darwin`, `x86_64-pc-windows-gnu`, …) to what its shared
/// libraries look like.
///
/// Returns `None` when the triple is not 2 to 4 dash-separated components,
/// or when its architecture or OS family is one this module does not know:
/// callers then cannot cross-check a file against it.
pub fn parse(triple: &str) -> Option<TargetInfo> {
    let components: Vec<&str> = triple.split('-').collect();
    if !(2..=4).contains(&components.len())
        || components.iter().any(|c| {
            c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        })
    {
        return None;
    }
    let arch = components[0];
    let rest = &components[1..];
    let has = |name: &str| rest.iter().any(|c| *c == name || c.starts_with(name));
    let (architecture, endianness, pointer_width) = architecture(arch, rest)?;
    let (format, os) = if has("windows") {
        (Format::Pe, Some("windows"))
    } else if has("uefi") {
        (Format::Pe, Some("uefi"))
    } else if rest.first() == Some(&"apple") {
        let os = if has("darwin") || has("macos") {
            "macos"
        } else if has("ios") {
            "ios"
        } else if has("tvos") {
            "tvos"
        } else if has("watchos") {
            "watchos"
        } else if has("visionos") {
            "visionos"
        } else {
            return None;
        };
        (Format::MachO, Some(os))
    } else if has("android") || has("androideabi") {
        (Format::Elf, Some("android"))
    } else if has("linux") {
        (Format::Elf, Some("linux"))
    } else if let Some(os) = [
        "freebsd",
        "netbsd",
        "openbsd",
        "dragonfly",
        "solaris",
        "illumos",
        "fuchsia",
        "redox",
        "haiku",
        "hurd",
        "nto",
        "vxworks",
        "aix",
    ]
    .into_iter()
    .find(|os| has(os))
    {
        if os == "aix" {
            return None; // XCOFF: not a plugin format.
        }
        (Format::Elf, Some(os))
    } else if arch.starts_with("wasm") {
        (Format::Wasm, None)
    } else {
        return None;
    };
    Some(TargetInfo {
        format,
        architecture,
        os,
        endianness,
        pointer_width,
    })
}

/// The longest target triple a metadata record holds (its 64-byte slot
/// with the terminating NUL).
pub const MAX_TRIPLE_LEN: usize = 63;

/// Whether `triple` is shaped like a target triple: 2 to 4 components
/// separated by `-`, each of lower-case ASCII letters, digits, `_` and `.`
/// starting with a letter or digit, at most [`MAX_TRIPLE_LEN`] bytes in
/// all. Such a text is one safe path component and URL segment (no `/`,
/// `\`, `..`, NUL or control character). Grammar only: whether the triple
/// names a target is [`is_known_plugin_target`].
pub fn is_triple_shaped(triple: &str) -> bool {
    let components: Vec<&str> = triple.split('-').collect();
    (1..=MAX_TRIPLE_LEN).contains(&triple.len())
        && (2..=4).contains(&components.len())
        && components.iter().all(|c| {
            c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        })
}

/// Whether `triple` is a target a plugin can be built for and published
/// for: shaped like a triple ([`is_triple_shaped`]) and known to [`parse`]
/// as a target of native shared libraries (ELF, PE or Mach-O; not
/// WebAssembly). The registry accepts only these.
pub fn is_known_plugin_target(triple: &str) -> bool {
    is_triple_shaped(triple)
        && parse(triple).is_some_and(|info| info.format.dylib_extension().is_some())
}

/// The architecture, byte order and pointer width of a triple's first
/// component (`rest` is the other components, for the x32 and ILP32 ABIs).
fn architecture(arch: &str, rest: &[&str]) -> Option<(object::Architecture, Endianness, u8)> {
    use Endianness::{Big, Little};
    use object::Architecture as A;
    let abi = rest.last().copied().unwrap_or_default();
    Some(match arch {
        "x86_64" | "x86_64h" if abi.ends_with("x32") => (A::X86_64_X32, Little, 32),
        "x86_64" | "x86_64h" | "amd64" => (A::X86_64, Little, 64),
        "i386" | "i486" | "i586" | "i686" | "x86" => (A::I386, Little, 32),
        "aarch64" | "arm64" | "arm64e" | "arm64ec" if abi.ends_with("ilp32") => {
            (A::Aarch64_Ilp32, Little, 32)
        }
        "aarch64" | "arm64" | "arm64e" | "arm64ec" => (A::Aarch64, Little, 64),
        "aarch64_be" if abi.ends_with("ilp32") => (A::Aarch64_Ilp32, Big, 32),
        "aarch64_be" => (A::Aarch64, Big, 64),
        "arm64_32" => (A::Aarch64_Ilp32, Little, 32),
        "riscv64" | "riscv64gc" | "riscv64imac" => (A::Riscv64, Little, 64),
        "powerpc" => (A::PowerPc, Big, 32),
        "powerpc64" => (A::PowerPc64, Big, 64),
        "powerpc64le" => (A::PowerPc64, Little, 64),
        "s390x" => (A::S390x, Big, 64),
        "mips" | "mipsisa32r6" => (A::Mips, Big, 32),
        "mipsel" | "mipsisa32r6el" => (A::Mips, Little, 32),
        "mips64" | "mipsisa64r6" if abi.ends_with("abin32") => (A::Mips64_N32, Big, 32),
        "mips64el" | "mipsisa64r6el" if abi.ends_with("abin32") => (A::Mips64_N32, Little, 32),
        "mips64" | "mipsisa64r6" => (A::Mips64, Big, 64),
        "mips64el" | "mipsisa64r6el" => (A::Mips64, Little, 64),
        "loongarch64" => (A::LoongArch64, Little, 64),
        "loongarch32" => (A::LoongArch32, Little, 32),
        "sparc64" | "sparcv9" => (A::Sparc64, Big, 64),
        "sparc" => (A::Sparc, Big, 32),
        "m68k" => (A::M68k, Big, 32),
        "hexagon" => (A::Hexagon, Little, 32),
        "csky" => (A::Csky, Little, 32),
        "xtensa" => (A::Xtensa, Little, 32),
        "wasm32" => (A::Wasm32, Little, 32),
        "wasm64" => (A::Wasm64, Little, 64),
        _ if arch.starts_with("riscv32") => (A::Riscv32, Little, 32),
        _ if arch.starts_with("armeb") || arch.starts_with("thumbeb") => (A::Arm, Big, 32),
        _ if arch.starts_with("arm") || arch.starts_with("thumb") => (A::Arm, Little, 32),
        _ => return None,
    })
}

/// A short lower-case name for an architecture, as Rust spells
/// `target_arch` (`x86_64`, `aarch64`, `x86`, `arm`, …).
pub fn architecture_name(architecture: object::Architecture) -> String {
    use object::Architecture as A;
    let name = match architecture {
        A::X86_64 => "x86_64",
        A::X86_64_X32 => "x86_64-x32",
        A::I386 => "x86",
        A::Aarch64 => "aarch64",
        A::Aarch64_Ilp32 => "aarch64-ilp32",
        A::Arm => "arm",
        A::Riscv32 => "riscv32",
        A::Riscv64 => "riscv64",
        A::PowerPc => "powerpc",
        A::PowerPc64 => "powerpc64",
        A::S390x => "s390x",
        A::Mips => "mips",
        A::Mips64 => "mips64",
        A::Mips64_N32 => "mips64-n32",
        A::LoongArch32 => "loongarch32",
        A::LoongArch64 => "loongarch64",
        A::Sparc => "sparc",
        A::Sparc32Plus => "sparc32plus",
        A::Sparc64 => "sparc64",
        A::M68k => "m68k",
        A::Hexagon => "hexagon",
        A::Csky => "csky",
        A::Xtensa => "xtensa",
        A::Wasm32 => "wasm32",
        A::Wasm64 => "wasm64",
        A::Unknown => "unknown",
        other => return format!("{other:?}").to_ascii_lowercase(),
    };
    name.to_owned()
}

/// The extension, without the dot, of a shared library built for `triple`:
/// its format's when [`parse`] knows the triple, else by the triple's words
/// (`windows`: `dll`, `apple`: `dylib`, anything else: `so`).
pub fn library_extension(triple: &str) -> &'static str {
    parse(triple)
        .and_then(|info| info.dylib_extension())
        .unwrap_or(if triple.contains("windows") {
            "dll"
        } else if triple.contains("apple") {
            "dylib"
        } else {
            "so"
        })
}

/// The file name of a plugin library in the distribution layout:
/// `<package>-<version>-<target>.<extension>` (what `cargo backworks build`
/// writes and [`split_dist_file_name`] splits).
pub fn dist_file_name(package: &str, version: &str, target: &str) -> String {
    format!("{package}-{version}-{target}.{}", library_extension(target))
}

/// Splits a file name in the distribution layout
/// `<name>-<version>-<target>.<extension>` into `(name-version, target)`.
///
/// The target is the longest dash-separated suffix of the stem that
/// [`parse`] knows and whose components do not start with a digit; what
/// precedes it must contain a `-` followed by a digit (the version).
/// Returns `None` for names that do not follow the layout
/// (`libweather.so`, `weather.dll`).
pub fn split_dist_file_name(stem: &str) -> Option<(&str, &str)> {
    stem.match_indices('-').find_map(|(dash, _)| {
        let (prefix, target) = (&stem[..dash], &stem[dash + 1..]);
        let plausible = !target
            .split('-')
            .any(|c| c.starts_with(|ch: char| ch.is_ascii_digit()));
        let versioned = prefix
            .match_indices('-')
            .any(|(i, _)| prefix[i + 1..].starts_with(|ch: char| ch.is_ascii_digit()));
        (plausible && versioned && parse(target).is_some()).then_some((prefix, target))
    })
}

#[cfg(test)]
mod tests {
    use object::Architecture as A;

    use super::*;

    #[test]
    fn the_tier_one_plugin_targets() {
        let cases = [
            (
                "x86_64-unknown-linux-gnu",
                Format::Elf,
                A::X86_64,
                "linux",
                64,
            ),
            (
                "x86_64-unknown-linux-musl",
                Format::Elf,
                A::X86_64,
                "linux",
                64,
            ),
            (
                "aarch64-unknown-linux-gnu",
                Format::Elf,
                A::Aarch64,
                "linux",
                64,
            ),
            (
                "x86_64-pc-windows-gnu",
                Format::Pe,
                A::X86_64,
                "windows",
                64,
            ),
            (
                "x86_64-pc-windows-msvc",
                Format::Pe,
                A::X86_64,
                "windows",
                64,
            ),
            (
                "aarch64-pc-windows-msvc",
                Format::Pe,
                A::Aarch64,
                "windows",
                64,
            ),
            ("i686-pc-windows-gnu", Format::Pe, A::I386, "windows", 32),
            ("x86_64-apple-darwin", Format::MachO, A::X86_64, "macos", 64),
            (
                "aarch64-apple-darwin",
                Format::MachO,
                A::Aarch64,
                "macos",
                64,
            ),
            ("aarch64-apple-ios", Format::MachO, A::Aarch64, "ios", 64),
            (
                "aarch64-linux-android",
                Format::Elf,
                A::Aarch64,
                "android",
                64,
            ),
            (
                "armv7-unknown-linux-gnueabihf",
                Format::Elf,
                A::Arm,
                "linux",
                32,
            ),
            (
                "riscv64gc-unknown-linux-gnu",
                Format::Elf,
                A::Riscv64,
                "linux",
                64,
            ),
            (
                "x86_64-unknown-freebsd",
                Format::Elf,
                A::X86_64,
                "freebsd",
                64,
            ),
            (
                "x86_64-unknown-illumos",
                Format::Elf,
                A::X86_64,
                "illumos",
                64,
            ),
        ];
        for (triple, format, architecture, os, width) in cases {
            let info = parse(triple).unwrap_or_else(|| panic!("{triple} is known"));
            assert_eq!(info.format, format, "{triple}");
            assert_eq!(info.architecture, architecture, "{triple}");
            assert_eq!(info.os, Some(os), "{triple}");
            assert_eq!(info.pointer_width, width, "{triple}");
            assert_eq!(info.endianness, Endianness::Little, "{triple}");
        }
    }

    #[test]
    fn byte_order_and_abi_variants() {
        let be = parse("powerpc64-unknown-linux-gnu").unwrap();
        assert_eq!(
            (be.architecture, be.endianness),
            (A::PowerPc64, Endianness::Big)
        );
        let le = parse("powerpc64le-unknown-linux-gnu").unwrap();
        assert_eq!(le.endianness, Endianness::Little);
        let s390x = parse("s390x-unknown-linux-gnu").unwrap();
        assert_eq!(s390x.endianness, Endianness::Big);
        let x32 = parse("x86_64-unknown-linux-gnux32").unwrap();
        assert_eq!((x32.architecture, x32.pointer_width), (A::X86_64_X32, 32));
        let mipsel = parse("mipsel-unknown-linux-gnu").unwrap();
        assert_eq!(
            (mipsel.architecture, mipsel.endianness),
            (A::Mips, Endianness::Little)
        );
        let wasm = parse("wasm32-unknown-unknown").unwrap();
        assert_eq!((wasm.format, wasm.os), (Format::Wasm, None));
        assert_eq!(wasm.dylib_extension(), None);
    }

    #[test]
    fn unknown_and_malformed_triples() {
        for triple in [
            "",
            "x86_64",
            "weather",
            "x86_64-unknown-linux-gnu-extra-parts",
            "frobnicator-unknown-linux-gnu",
            "x86_64-unknown-plan9",
            "x86_64--linux",
            "x86_64-unknown-linux-gnu ",
            "powerpc64-ibm-aix",
            "x86_64-apple-unknownos",
        ] {
            assert_eq!(parse(triple), None, "{triple:?}");
        }
    }

    #[test]
    fn extensions() {
        assert_eq!(Format::Elf.dylib_extension(), Some("so"));
        assert_eq!(Format::Pe.dylib_extension(), Some("dll"));
        assert_eq!(Format::MachO.dylib_extension(), Some("dylib"));
        assert_eq!(Format::from_dylib_extension("DLL"), Some(Format::Pe));
        assert_eq!(Format::from_dylib_extension("dylib"), Some(Format::MachO));
        assert_eq!(Format::from_dylib_extension("a"), None);
    }

    #[test]
    fn architecture_names() {
        assert_eq!(architecture_name(A::X86_64), "x86_64");
        assert_eq!(architecture_name(A::Aarch64), "aarch64");
        assert_eq!(architecture_name(A::I386), "x86");
        assert_eq!(architecture_name(A::Bpf), "bpf");
    }

    #[test]
    fn dist_file_names() {
        assert_eq!(
            split_dist_file_name("weather-1.0.0-x86_64-unknown-linux-gnu"),
            Some(("weather-1.0.0", "x86_64-unknown-linux-gnu"))
        );
        assert_eq!(
            split_dist_file_name("weather-c-1.0.0-rc.1-aarch64-apple-darwin"),
            Some(("weather-c-1.0.0-rc.1", "aarch64-apple-darwin"))
        );
        assert_eq!(
            split_dist_file_name("x86-tools-2.1.0-x86_64-pc-windows-gnu"),
            Some(("x86-tools-2.1.0", "x86_64-pc-windows-gnu"))
        );
        assert_eq!(split_dist_file_name("libweather"), None);
        assert_eq!(
            split_dist_file_name("weather-x86_64-unknown-linux-gnu"),
            None
        );
        assert_eq!(split_dist_file_name("weather-1.0.0"), None);
        assert_eq!(split_dist_file_name("weather-1.0.0-sparkle-pony"), None);
    }

    #[test]
    fn plugin_targets_are_known_triples_and_safe_path_components() {
        for known in [
            "x86_64-unknown-linux-gnu",
            "aarch64-apple-darwin",
            "x86_64-pc-windows-msvc",
            "x86_64-pc-windows-gnu",
            "aarch64-unknown-linux-musl",
            "armv7-unknown-linux-gnueabihf",
            "riscv64gc-unknown-linux-gnu",
        ] {
            assert!(is_triple_shaped(known), "{known}");
            assert!(is_known_plugin_target(known), "{known}");
        }
        for hostile in [
            "",
            "..",
            "../../../../srv/victim",
            "x86_64-unknown-linux-gnu/../../other",
            "../x86_64-unknown-linux-gnu",
            "x86_64-unknown-linux-gnu\\..",
            "x86_64-unknown-linux-gnu\0",
            "x86_64-.-linux-gnu",
            "x86_64-..-linux-gnu",
            "x86_64--linux-gnu",
            "-x86_64-linux-gnu",
            "X86_64-unknown-linux-gnu",
            "x86_64-unknown-linux-gnu\n",
            "x86_64-unknown-linux-gnu ",
            "x86_64-unknown-linux-gnu-extra-part",
            "x86_64",
        ] {
            assert!(!is_triple_shaped(hostile), "{hostile:?}");
            assert!(!is_known_plugin_target(hostile), "{hostile:?}");
        }
        let long = format!("x86_64-unknown-linux-{}", "g".repeat(MAX_TRIPLE_LEN));
        assert!(!is_triple_shaped(&long));
        // Well-formed, but no target this module knows, or not a native
        // shared-library target.
        for unknown in [
            "foo-bar-baz",
            "wasm32-unknown-unknown",
            "x86_64-unknown-none",
        ] {
            assert!(is_triple_shaped(unknown), "{unknown}");
            assert!(!is_known_plugin_target(unknown), "{unknown}");
        }
    }
}
