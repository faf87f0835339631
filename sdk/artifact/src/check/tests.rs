//! Unit tests of `check`: the finding logic on synthetic Mach-O dylibs (no
//! Apple linker is needed to build them), on this test binary (a real ELF
//! executable), and on random, truncated and corrupted bytes.

use std::collections::BTreeMap;

use super::*;

const CPU_ARM64: u32 = 0x0100_000c;
const CPU_X86_64: u32 = 0x0100_0007;
const PLATFORM_MACOS: u32 = 1;

/// A metadata record's 512 bytes, laid out as `docs/abi.md` says.
#[derive(Debug, Clone)]
struct Record {
    name: &'static str,
    version: &'static str,
    target: &'static str,
    abi: u32,
    info_size: u32,
    vtable_size: u32,
    flags: u32,
    big_endian: bool,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            name: "weather",
            version: "1.0.0",
            target: "aarch64-apple-darwin",
            abi: 1,
            info_size: 32,
            vtable_size: 64,
            flags: 0,
            big_endian: false,
        }
    }
}

impl Record {
    fn bytes(&self) -> Vec<u8> {
        let word = |value: u32| {
            if self.big_endian {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            }
        };
        let slot = |text: &str, size: usize| {
            let mut slot = text.as_bytes().to_vec();
            slot.resize(size, 0);
            slot
        };
        let mut out = b"BWKSPLUG".to_vec();
        for value in [
            0x0A0B_0C0D,
            512,
            self.abi,
            self.info_size,
            self.vtable_size,
            self.flags,
        ] {
            out.extend(word(value));
        }
        out.extend(slot("0.1.0", 32));
        out.extend(slot(self.name, 64));
        out.extend(slot(self.version, 64));
        out.extend(slot(self.target, 64));
        out.extend(slot("Weather API integration", 256));
        assert_eq!(out.len(), 512);
        out
    }
}

const TEXT: u64 = 0x1000;
const BWMETA: u64 = 0x2000;
const CONST: u64 = 0x2400;
const LINKEDIT: u64 = 0x3000;

/// A minimal 64-bit Mach-O dylib: `__TEXT,__text`, `__DATA,__bwmeta` (the
/// record), `__DATA,__const`, and an export trie in `__LINKEDIT`.
#[derive(Debug, Clone)]
struct MachO {
    cpu: u32,
    filetype: u32,
    record: Option<Vec<u8>>,
    /// Exported names (with Mach-O's `_`) and addresses.
    exports: Vec<(String, u64)>,
    /// A trie to use instead of one built from `exports`.
    raw_trie: Option<Vec<u8>>,
}

impl MachO {
    fn plugin() -> Self {
        Self {
            cpu: CPU_ARM64,
            filetype: 6, // MH_DYLIB
            record: Some(Record::default().bytes()),
            exports: vec![
                ("_plugin_info".into(), TEXT),
                ("_plugin_vtable".into(), TEXT + 0x10),
                ("_backworks_plugin_metadata".into(), BWMETA),
            ],
            raw_trie: None,
        }
    }

    fn with_record(mut self, record: Record) -> Self {
        self.record = Some(record.bytes());
        self
    }

    fn export(mut self, name: &str, address: Option<u64>) -> Self {
        self.exports.retain(|(n, _)| n != name);
        if let Some(address) = address {
            self.exports.push((name.to_owned(), address));
        }
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let trie = self.raw_trie.clone().unwrap_or_else(|| {
            encode_trie(
                &self
                    .exports
                    .iter()
                    .map(|(name, address)| (name.as_str(), *address))
                    .collect::<Vec<_>>(),
            )
        });
        let record = self.record.clone().unwrap_or_default();
        let mut commands = Vec::new();
        let mut ncmds = 0;
        let mut segment =
            |name: &str, vmaddr: u64, size: u64, sections: &[(&str, u64, u64, u32)]| {
                let mut command = Vec::new();
                command.extend(0x19u32.to_le_bytes()); // LC_SEGMENT_64
                command.extend((72 + 80 * sections.len() as u32).to_le_bytes());
                command.extend(fixed(name, 16));
                command.extend(vmaddr.to_le_bytes());
                command.extend(size.to_le_bytes());
                command.extend(vmaddr.to_le_bytes()); // fileoff == vmaddr
                command.extend(size.to_le_bytes());
                command.extend(
                    [5u32, 5, sections.len() as u32, 0]
                        .iter()
                        .flat_map(|w| w.to_le_bytes()),
                );
                for (section, addr, size, flags) in sections {
                    command.extend(fixed(section, 16));
                    command.extend(fixed(name, 16));
                    command.extend(addr.to_le_bytes());
                    command.extend(size.to_le_bytes());
                    command.extend((*addr as u32).to_le_bytes()); // offset
                    command.extend(
                        [4u32, 0, 0, *flags, 0, 0, 0]
                            .iter()
                            .flat_map(|w| w.to_le_bytes()),
                    );
                }
                commands.extend(command);
                ncmds += 1;
            };
        segment("__TEXT", 0, 0x2000, &[("__text", TEXT, 0x100, 0x8000_0400)]);
        segment(
            "__DATA",
            0x2000,
            0x1000,
            &[
                ("__bwmeta", BWMETA, record.len() as u64, 0),
                ("__const", CONST, 0x40, 0),
            ],
        );
        segment("__LINKEDIT", LINKEDIT, trie.len() as u64, &[]);
        // LC_DYLD_EXPORTS_TRIE
        commands.extend(
            [0x8000_0033u32, 16, LINKEDIT as u32, trie.len() as u32]
                .iter()
                .flat_map(|w| w.to_le_bytes()),
        );
        // LC_BUILD_VERSION: macOS 11.0, no tools.
        commands.extend(
            [0x32u32, 24, PLATFORM_MACOS, 0x000b_0000, 0, 0]
                .iter()
                .flat_map(|w| w.to_le_bytes()),
        );
        ncmds += 2;

        let mut out = Vec::new();
        out.extend(
            [
                0xfeed_facfu32,
                self.cpu,
                0,
                self.filetype,
                ncmds,
                commands.len() as u32,
                0,
                0,
            ]
            .iter()
            .flat_map(|w| w.to_le_bytes()),
        );
        out.extend(commands);
        out.resize(TEXT as usize, 0);
        out.extend([0xd5, 0x03, 0x20, 0x1f].repeat(0x40)); // arm64 nop
        out.resize(BWMETA as usize, 0);
        out.extend(&record);
        out.resize(LINKEDIT as usize, 0);
        out.extend(trie);
        out
    }
}

fn fixed(text: &str, size: usize) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.resize(size, 0);
    out
}

fn uleb(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Encodes a Mach-O export trie with one-byte edges, offsets iterated to a
/// fixed point (they are uleb128, so a node's size depends on them).
fn encode_trie(exports: &[(&str, u64)]) -> Vec<u8> {
    #[derive(Default)]
    struct Node {
        address: Option<u64>,
        children: BTreeMap<u8, usize>,
    }
    let mut nodes = vec![Node::default()];
    for (name, address) in exports {
        let mut at = 0;
        for &byte in name.as_bytes() {
            at = match nodes[at].children.get(&byte) {
                Some(&child) => child,
                None => {
                    nodes.push(Node::default());
                    let child = nodes.len() - 1;
                    nodes[at].children.insert(byte, child);
                    child
                }
            };
        }
        nodes[at].address = Some(*address);
    }
    let encode = |node: &Node, offsets: &[usize]| {
        let mut out = Vec::new();
        match node.address {
            Some(address) => {
                let mut info = vec![0]; // flags: regular
                uleb(address, &mut info);
                uleb(info.len() as u64, &mut out);
                out.extend(info);
            }
            None => out.push(0),
        }
        out.push(u8::try_from(node.children.len()).unwrap());
        for (&byte, &child) in &node.children {
            out.extend([byte, 0]);
            uleb(offsets[child] as u64, &mut out);
        }
        out
    };
    let mut offsets = vec![0; nodes.len()];
    loop {
        let mut at = 0;
        let mut changed = false;
        for (i, node) in nodes.iter().enumerate() {
            changed |= offsets[i] != at;
            offsets[i] = at;
            at += encode(node, &offsets).len();
        }
        if !changed {
            break;
        }
    }
    nodes
        .iter()
        .flat_map(|node| encode(node, &offsets))
        .collect()
}

fn check(name: &str, bytes: &[u8]) -> FileReport {
    check_bytes(Path::new(name), bytes)
}

fn codes(report: &FileReport) -> Vec<(FindingCode, Severity)> {
    report
        .findings()
        .iter()
        .map(|f| (f.code, f.severity))
        .collect()
}

fn message(report: &FileReport, code: FindingCode) -> &str {
    &report
        .findings()
        .iter()
        .find(|f| f.code == code)
        .unwrap_or_else(|| panic!("no {code} in {:#?}", report.findings()))
        .message
}

const DIST_NAME: &str = "weather-1.0.0-aarch64-apple-darwin.dylib";

#[test]
fn a_macho_plugin_is_valid_and_described() {
    let report = check(DIST_NAME, &MachO::plugin().bytes());
    assert!(report.is_valid(), "{}", report.render_text());
    assert_eq!(report.findings(), []);
    assert_eq!(report.format(), Some(FileFormat::MachO));
    assert_eq!(report.architecture(), Some("aarch64"));
    assert_eq!(report.os(), Some("macos"));
    assert_eq!(report.endianness(), Some(Endianness::Little));
    assert_eq!(report.pointer_width(), Some(64));
    assert_eq!(report.kind(), Some(ObjectKind::SharedLibrary));
    let exports = report.exports().unwrap();
    assert_eq!(exports.count, 3);
    assert_eq!(
        exports.plugin_info,
        SymbolReport {
            exported: true,
            kind: Some(SymbolKind::Function),
            address: Some(TEXT),
            section: Some("__TEXT,__text".into()),
        }
    );
    assert_eq!(
        exports.backworks_plugin_metadata.kind,
        Some(SymbolKind::Data)
    );
    assert_eq!(
        exports.backworks_plugin_metadata.section.as_deref(),
        Some("__DATA,__bwmeta")
    );
    let metadata = report.metadata().unwrap();
    assert_eq!(
        (metadata.name.as_str(), metadata.target.as_str()),
        ("weather", "aarch64-apple-darwin")
    );
    assert_eq!(report.metadata_location(), Some("section `__bwmeta`"));
    // LC_BUILD_VERSION, platform macOS, minos 11.0: the floor.
    let floor = report.floor().unwrap();
    assert_eq!(floor.macos, Some(crate::floor::Version::new(11, 0, 0)));
    assert_eq!(floor.glibc, None);
    assert!(
        report.render_text().contains("\n  floor:     macOS 11.0\n"),
        "{}",
        report.render_text()
    );
}

#[test]
fn thousands_of_exports_are_counted() {
    let mut macho = MachO::plugin();
    for i in 0..5000 {
        macho.exports.push((format!("_helper_{i}"), TEXT + 0x20));
    }
    let report = check(DIST_NAME, &macho.bytes());
    assert!(report.is_valid(), "{}", report.render_text());
    assert_eq!(report.exports().unwrap().count, 5003);
}

#[test]
fn missing_and_misplaced_symbols() {
    let report = check(
        DIST_NAME,
        &MachO::plugin().export("_plugin_vtable", None).bytes(),
    );
    assert_eq!(
        codes(&report),
        [(FindingCode::MissingSymbol, Severity::Error)]
    );
    assert!(
        message(&report, FindingCode::MissingSymbol).contains("`plugin_vtable` is not exported")
    );
    assert!(!report.is_valid());

    let report = check(
        DIST_NAME,
        &MachO::plugin()
            .export("_plugin_vtable", Some(CONST))
            .bytes(),
    );
    assert_eq!(
        codes(&report),
        [(FindingCode::SymbolNotAFunction, Severity::Error)]
    );
    let text = message(&report, FindingCode::SymbolNotAFunction);
    assert!(
        text.contains("`plugin_vtable`") && text.contains("__DATA,__const"),
        "{text}"
    );

    let report = check(
        DIST_NAME,
        &MachO::plugin()
            .export("_backworks_plugin_metadata", Some(TEXT + 0x30))
            .bytes(),
    );
    assert_eq!(
        codes(&report),
        [(FindingCode::SymbolNotData, Severity::Error)]
    );

    // The record is still found by section, but the host needs the symbol.
    let report = check(
        DIST_NAME,
        &MachO::plugin()
            .export("_backworks_plugin_metadata", None)
            .bytes(),
    );
    assert_eq!(
        codes(&report),
        [(FindingCode::MissingSymbol, Severity::Error)]
    );
    assert!(report.metadata().is_some());

    // Names are matched without Mach-O's underscore only.
    let report = check(
        DIST_NAME,
        &MachO::plugin()
            .export("_plugin_info", None)
            .export("plugin_info_", Some(TEXT))
            .bytes(),
    );
    assert_eq!(
        codes(&report),
        [(FindingCode::MissingSymbol, Severity::Error)]
    );
}

#[test]
fn each_abi_revision_is_checked_against_its_own_table_size() {
    let record = |record: Record| check(DIST_NAME, &MachO::plugin().with_record(record).bytes());
    let minor = |m: u32| m << crate::metadata::FLAG_ABI_MINOR_SHIFT;

    // 1.0, 1.1 and 1.2 at their own sizes; 1.3 (newer than this tool) with
    // one more entry than 1.2.
    for (flags, vtable_size, revision) in [
        (0, 64, "1.0"),
        (minor(1), 72, "1.1"),
        (minor(2), 104, "1.2"),
        (minor(3), 112, "1.3"),
    ] {
        let report = record(Record {
            flags,
            vtable_size,
            ..Record::default()
        });
        assert_eq!(codes(&report), [], "{revision}");
        assert_eq!(
            report.metadata().unwrap().abi_revision().to_string(),
            revision
        );
        assert!(
            report.render_text().contains(&format!(
                "abi:       {revision} (this tool supports v1, up to 1.2)"
            )),
            "{}",
            report.render_text()
        );
    }

    // 1.1 at 1.0's size.
    let report = record(Record {
        flags: minor(1),
        vtable_size: 64,
        ..Record::default()
    });
    assert_eq!(
        codes(&report),
        [(FindingCode::StructSizeMismatch, Severity::Error)]
    );
    let text = message(&report, FindingCode::StructSizeMismatch);
    assert!(
        text.contains("`vtable_size` = 64, but `PluginVTable` of ABI 1.1 is 72 bytes on this 64-bit file (9 × pointer)"),
        "{text}"
    );

    // 1.3 smaller than 1.2, or not whole pointers.
    for vtable_size in [72, 105] {
        let report = record(Record {
            flags: minor(3),
            vtable_size,
            ..Record::default()
        });
        assert_eq!(
            codes(&report),
            [(FindingCode::StructSizeMismatch, Severity::Error)]
        );
        let text = message(&report, FindingCode::StructSizeMismatch);
        assert!(
            text.contains(&format!("`vtable_size` = {vtable_size} for ABI 1.3, newer than this tool knows (1.2); a table of a newer revision is a whole number of pointers from 104 to 512 bytes")),
            "{text}"
        );
    }
}

#[test]
fn metadata_findings() {
    let record = |record: Record| check(DIST_NAME, &MachO::plugin().with_record(record).bytes());

    let report = record(Record {
        abi: 2,
        vtable_size: 80,
        ..Record::default()
    });
    assert_eq!(
        codes(&report),
        [(FindingCode::UnsupportedAbi, Severity::Error)]
    );
    assert!(message(&report, FindingCode::UnsupportedAbi).contains("upgrade cargo-backworks"));
    let report = record(Record {
        abi: 0,
        ..Record::default()
    });
    assert!(message(&report, FindingCode::UnsupportedAbi).contains("rebuild the plugin"));

    let report = record(Record {
        info_size: 40,
        ..Record::default()
    });
    assert_eq!(
        codes(&report),
        [(FindingCode::StructSizeMismatch, Severity::Error)]
    );
    let text = message(&report, FindingCode::StructSizeMismatch);
    assert!(
        text.contains("`info_size` = 40") && text.contains("32 bytes"),
        "{text}"
    );

    let report = record(Record {
        flags: 1,
        ..Record::default()
    });
    assert_eq!(codes(&report), [(FindingCode::PanicAbort, Severity::Error)]);

    let report = record(Record {
        target: "sparkle-pony-os",
        ..Record::default()
    });
    assert_eq!(
        codes(&report),
        [
            (FindingCode::UnknownTarget, Severity::Warning),
            (FindingCode::TargetMismatch, Severity::Error),
        ],
        "the file name still names a known target"
    );
    let report = check(
        "libweather.dylib",
        &MachO::plugin()
            .with_record(Record {
                target: "sparkle-pony-os",
                ..Record::default()
            })
            .bytes(),
    );
    assert_eq!(
        codes(&report),
        [(FindingCode::UnknownTarget, Severity::Warning)]
    );
    assert!(report.is_valid(), "warnings do not make a file invalid");

    let report = record(Record {
        big_endian: true,
        ..Record::default()
    });
    assert_eq!(
        codes(&report),
        [(FindingCode::TargetMismatch, Severity::Error)]
    );
    assert!(message(&report, FindingCode::TargetMismatch).contains("big-endian"));

    let mut corrupt = Record::default().bytes();
    corrupt[64..128].fill(b'a'); // name without NUL
    let mut macho = MachO::plugin();
    macho.record = Some(corrupt);
    let report = check(DIST_NAME, &macho.bytes());
    assert_eq!(
        codes(&report),
        [(FindingCode::InvalidMetadata, Severity::Error)]
    );
    assert!(message(&report, FindingCode::InvalidMetadata).contains("name"));

    let mut twice = Record::default().bytes();
    twice.extend(Record::default().bytes());
    macho.record = Some(twice);
    let report = check(DIST_NAME, &macho.bytes());
    assert_eq!(
        codes(&report),
        [(FindingCode::InvalidMetadata, Severity::Error)]
    );
    assert!(message(&report, FindingCode::InvalidMetadata).contains("more than one"));

    let mut macho = MachO::plugin().export("_backworks_plugin_metadata", None);
    macho.record = None;
    let report = check(DIST_NAME, &macho.bytes());
    // An empty `__bwmeta` section: found, but too short.
    assert_eq!(
        codes(&report),
        [
            (FindingCode::MissingSymbol, Severity::Error),
            (FindingCode::InvalidMetadata, Severity::Error)
        ]
    );
}

#[test]
fn target_findings() {
    let report = check(
        DIST_NAME,
        &MachO::plugin()
            .with_record(Record {
                target: "x86_64-unknown-linux-gnu",
                ..Record::default()
            })
            .bytes(),
    );
    let text = message(&report, FindingCode::TargetMismatch);
    assert!(
        text.contains("`x86_64-unknown-linux-gnu`")
            && text.contains("format Mach-O (not ELF)")
            && text.contains("architecture aarch64 (not x86_64)")
            && text.contains("OS macos (not linux)"),
        "{text}"
    );
    // And the file name disagrees with the record too.
    assert_eq!(
        codes(&report),
        [
            (FindingCode::TargetMismatch, Severity::Error),
            (FindingCode::TargetMismatch, Severity::Error),
        ]
    );

    let mut x86 = MachO::plugin();
    x86.cpu = CPU_X86_64;
    let report = check(DIST_NAME, &x86.bytes());
    assert_eq!(
        codes(&report),
        [(FindingCode::TargetMismatch, Severity::Error)]
    );
    assert!(
        message(&report, FindingCode::TargetMismatch).contains("architecture x86_64 (not aarch64)")
    );
}

#[test]
fn file_name_findings() {
    let plugin = MachO::plugin().bytes();
    assert!(check("libweather.dylib", &plugin).findings().is_empty());

    let report = check("weather-1.0.0-x86_64-apple-darwin.dylib", &plugin);
    assert_eq!(
        codes(&report),
        [(FindingCode::TargetMismatch, Severity::Error)]
    );
    assert!(message(&report, FindingCode::TargetMismatch).contains(DIST_NAME));

    let report = check("weather-2.0.0-aarch64-apple-darwin.dylib", &plugin);
    assert_eq!(
        codes(&report),
        [(FindingCode::FileNameMismatch, Severity::Warning)]
    );
    assert!(report.is_valid());

    let report = check("weather-1.0.0-aarch64-apple-darwin.so", &plugin);
    assert_eq!(
        codes(&report),
        [(FindingCode::ExtensionMismatch, Severity::Error)]
    );
    assert!(
        message(&report, FindingCode::ExtensionMismatch).contains("rename it to end in `.dylib`")
    );

    for name in ["libweather", "libweather.dylib.1"] {
        let report = check(name, &plugin);
        assert_eq!(
            codes(&report),
            [(FindingCode::ExtensionMismatch, Severity::Warning)],
            "{name}"
        );
    }

    // Without a record, the file name's target is compared with the file.
    let mut bare = MachO::plugin().export("_backworks_plugin_metadata", None);
    bare.record = Some(vec![0; 16]);
    bare.exports.clear();
    bare.raw_trie = Some(vec![0, 0]);
    let bytes = bare.bytes();
    let report = check("weather-1.0.0-x86_64-pc-windows-gnu.dylib", &bytes);
    assert!(
        report.has(FindingCode::TargetMismatch),
        "{:#?}",
        report.findings()
    );
    assert!(message(&report, FindingCode::TargetMismatch).contains("format Mach-O (not PE)"));
}

#[test]
fn not_shared_libraries() {
    let mut bundle = MachO::plugin();
    bundle.filetype = 2; // MH_EXECUTE
    let report = check(DIST_NAME, &bundle.bytes());
    assert_eq!(
        codes(&report),
        [(FindingCode::NotASharedLibrary, Severity::Error)]
    );
    assert_eq!(report.kind(), Some(ObjectKind::Executable));

    // This test binary: a real ELF executable (a PIE with today's
    // toolchains), which exports nothing.
    let exe = std::env::current_exe().unwrap();
    let report = check_file(&exe).unwrap();
    assert_eq!(report.format(), Some(FileFormat::Elf));
    assert_eq!(report.kind(), Some(ObjectKind::Executable));
    assert!(report.has(FindingCode::NotASharedLibrary));
    assert!(report.has(FindingCode::NoMetadata));
    assert!(
        !report.has(FindingCode::MissingSymbol),
        "only libraries export"
    );
    assert!(
        !report.has(FindingCode::ExtensionMismatch),
        "only libraries are named .so"
    );
}

#[test]
fn things_that_are_not_objects() {
    let utf8 = "é".repeat(3000);
    let cases: [(&str, &[u8], FileFormat, FindingCode, &str); 9] = [
        (
            "empty.so",
            b"",
            FileFormat::Empty,
            FindingCode::NotAnObject,
            "is empty",
        ),
        (
            "notes.txt",
            b"hello\nworld\n",
            FileFormat::Text,
            FindingCode::NotAnObject,
            "text file",
        ),
        (
            "utf8.so",
            utf8.as_bytes(),
            FileFormat::Text,
            FindingCode::NotAnObject,
            "text file",
        ),
        (
            "m.wasm",
            b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0",
            FileFormat::Wasm,
            FindingCode::NotAnObject,
            "WebAssembly",
        ),
        (
            "lib.a",
            b"!<arch>\nfoo.o/          0           0     0     644     4         `\nabcd",
            FileFormat::Archive,
            FindingCode::NotAnObject,
            "static library archive",
        ),
        (
            "short.so",
            b"!<arch>\n",
            FileFormat::Archive,
            FindingCode::NotAnObject,
            "static library archive",
        ),
        (
            "fat.dylib",
            &[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            FileFormat::MachOUniversal,
            FindingCode::NotAnObject,
            "lipo",
        ),
        (
            "tiny.so",
            b"\x7fELF\x02\x01",
            FileFormat::Elf,
            FindingCode::MalformedObject,
            "truncated or corrupt",
        ),
        (
            "junk.dll",
            &[
                0x00, 0x01, 0x02, 0xff, 0xfe, 0x00, 0x10, 0x20, 0x00, 0x01, 0x02, 0xff, 0xfe, 0x00,
                0x10, 0x20, 0x00,
            ],
            FileFormat::Unknown,
            FindingCode::NotAnObject,
            "00 01 02 ff",
        ),
    ];
    for (name, bytes, format, code, text) in cases {
        let report = check(name, bytes);
        assert_eq!(report.format(), Some(format), "{name}");
        assert_eq!(codes(&report), [(code, Severity::Error)], "{name}");
        let found = message(&report, code);
        assert!(
            found.contains(text) && found.contains(name),
            "{name}: {found}"
        );
        assert!(report.exports().is_none() && report.metadata().is_none());
        assert!(!report.is_valid());
    }
}

#[test]
fn a_trie_with_shared_nodes_is_malformed_not_a_hang() {
    let mut trie = Vec::new();
    for level in 0..30u8 {
        let next = (level + 1) * 8;
        trie.extend([0, 2, b'x', 0, next, b'y', 0, next]);
    }
    trie.extend([0, 0]);
    let mut macho = MachO::plugin();
    macho.raw_trie = Some(trie);
    let report = check(DIST_NAME, &macho.bytes());
    assert_eq!(
        codes(&report),
        [(FindingCode::MalformedObject, Severity::Error)]
    );
    assert!(message(&report, FindingCode::MalformedObject).contains("reached twice"));
    assert!(report.exports().is_none());
    assert!(
        report.metadata().is_some(),
        "the record is still read by section"
    );
}

/// xorshift64: a reproducible stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5EED_CAFE_F00D_D00D);
    let magics: [&[u8]; 10] = [
        b"",
        b"\x7fELF\x02\x01\x01",
        b"\x7fELF\x01\x02\x01",
        b"MZ",
        &[0xcf, 0xfa, 0xed, 0xfe],
        &[0xfe, 0xed, 0xfa, 0xce],
        &[0xca, 0xfe, 0xba, 0xbe],
        b"!<arch>\n",
        b"\0asm\x01\0\0\0",
        &[0x64, 0x86],
    ];
    for round in 0..4000 {
        let magic = magics[round % magics.len()];
        let mut bytes = magic.to_vec();
        let len = rng.below(if round % 4 == 0 { 8192 } else { 600 });
        bytes.extend(rng.bytes(len));
        let report = check("random.so", &bytes);
        assert!(!report.is_valid(), "random bytes are not a plugin");
        assert!(!report.findings().is_empty());
        let _ = report.render_text();
    }
}

#[test]
fn truncated_and_corrupted_plugins_never_panic() {
    let plugin = MachO::plugin().bytes();
    for cut in (0..plugin.len()).step_by(7).chain([plugin.len() - 1]) {
        let report = check(DIST_NAME, &plugin[..cut]);
        assert!(!report.is_valid(), "cut at {cut} still valid");
    }
    let mut rng = Rng(0xB0BA_FE77);
    for _ in 0..3000 {
        let mut bytes = plugin.clone();
        for _ in 0..=rng.below(8) {
            // Mostly the header and load commands, where damage matters.
            let at = if rng.below(4) == 0 {
                rng.below(bytes.len())
            } else {
                rng.below(0x300)
            };
            bytes[at] = rng.next() as u8;
        }
        let _ = check(DIST_NAME, &bytes).render_text();
    }
    // A real ELF, truncated.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    for cut in [
        0,
        1,
        16,
        63,
        64,
        100,
        4096,
        65_536,
        exe.len() / 2,
        exe.len() - 1,
    ] {
        let report = check("exe.so", &exe[..cut.min(exe.len())]);
        assert!(!report.is_valid(), "cut at {cut}");
    }
}

#[test]
fn codes_are_stable_and_kebab_case() {
    let mut seen = std::collections::HashSet::new();
    for code in FindingCode::ALL {
        let json = serde_json::to_value(code).unwrap();
        assert_eq!(json, code.as_str(), "serde and as_str agree");
        assert!(
            code.as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-')
        );
        assert!(seen.insert(code.as_str()));
    }
}

#[test]
fn errors_are_lower_case_and_name_the_file() {
    let path = PathBuf::from("some/plugin.so");
    let io = || io::Error::from(io::ErrorKind::PermissionDenied);
    for error in [
        CheckError::Open {
            path: path.clone(),
            source: io(),
        },
        CheckError::NotAFile {
            path: path.clone(),
            kind: "a FIFO",
        },
        CheckError::Read {
            path: path.clone(),
            source: io(),
        },
        CheckError::TooLarge {
            path: path.clone(),
            size: MAX_FILE_SIZE + 1,
            max: MAX_FILE_SIZE,
        },
    ] {
        let text = error.to_string();
        assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
        assert!(text.contains("some/plugin.so"), "{text}");
        assert_eq!(error.path(), Some(path.as_path()));
    }
    assert!(CheckError::NoFiles.to_string().starts_with("no files"));
    assert!(
        CheckError::Write(io())
            .to_string()
            .starts_with("cannot write")
    );
}

#[test]
fn a_fifo_is_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.so");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    // Opening a FIFO for reading would block this test forever.
    let error = check_file(&fifo).unwrap_err();
    assert!(matches!(error, CheckError::NotAFile { .. }), "{error}");
}

#[test]
fn a_file_over_the_cap_is_refused_unread() {
    // Sparse: no byte of it is written or read.
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(MAX_FILE_SIZE + 1).unwrap();
    let error = check_file(file.path()).unwrap_err();
    assert!(
        matches!(error, CheckError::TooLarge { size, .. } if size == MAX_FILE_SIZE + 1),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("512 MiB"), "{text}");
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    // A file under the cap is read and checked (zeros: not an object).
    file.as_file().set_len(1 << 20).unwrap();
    let report = check_file(file.path()).unwrap();
    assert_eq!(report.size(), Some(1 << 20));
    assert!(report.has(FindingCode::NotAnObject));
}

#[test]
fn an_empty_file_is_checked() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let report = check_file(file.path()).unwrap();
    assert_eq!(report.format(), Some(FileFormat::Empty));
    assert_eq!(report.size(), Some(0));
}

/// The C weather plugin (`examples/c-plugin/weather.c`), compiled and linked
/// for this machine by the system C compiler, as bytes.
fn c_plugin() -> Vec<u8> {
    // The workspace root: this crate is sdk/artifact.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("libweather_c.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = std::process::Command::new(&compiler)
        .args(["-std=c11", "-O2", "-shared", "-fPIC", "-I"])
        .arg(root.join("sdk/include"))
        .arg("-o")
        .arg(&out)
        .arg(root.join("examples/c-plugin/weather.c"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).unwrap()
}

/// Issue 13, defect 8: an ELF library whose program headers are gone
/// (`e_phnum = 0`) parses, and its section table still shows the exports
/// and the record; but `dlopen` maps a library by its program headers and
/// refuses it. It was a "valid plugin".
#[test]
fn an_elf_library_without_loadable_segments_is_not_loadable() {
    let plugin = c_plugin();
    assert_eq!(&plugin[..5], b"\x7fELF\x02", "a 64-bit ELF");
    assert_eq!(plugin[5], 1, "little-endian");
    let name = "libweather_c.so";
    let report = check(name, &plugin);
    assert!(report.is_valid(), "{}", report.render_text());
    // Linked against this machine's glibc: some `GLIBC_2.x` need is its floor.
    let need = report
        .floor()
        .unwrap()
        .glibc
        .clone()
        .expect("a glibc floor");
    assert!(need.symbol_version.starts_with("GLIBC_2."), "{need}");
    assert!(
        report
            .render_text()
            .contains(&format!("\n  floor:     {need}")),
        "{}",
        report.render_text()
    );

    // e_phnum: two bytes at 0x38 in a 64-bit ELF header.
    let mut no_segments = plugin.clone();
    no_segments[0x38..0x3a].copy_from_slice(&0u16.to_le_bytes());
    let report = check(name, &no_segments);
    assert!(!report.is_valid(), "{}", report.render_text());
    assert_eq!(
        codes(&report),
        [(FindingCode::NotLoadable, Severity::Error)],
        "{}",
        report.render_text()
    );
    insta::assert_snapshot!(
        "no_program_headers",
        message(&report, FindingCode::NotLoadable)
    );

    // PT_DYNAMIC (2) turned into PT_NULL (0): still loadable segments, but
    // nothing for the loader to find symbols through.
    let phoff = u64::from_le_bytes(plugin[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = usize::from(u16::from_le_bytes(plugin[0x36..0x38].try_into().unwrap()));
    let phnum = usize::from(u16::from_le_bytes(plugin[0x38..0x3a].try_into().unwrap()));
    let mut no_dynamic = plugin.clone();
    let mut patched = 0;
    for at in (0..phnum).map(|i| phoff + i * phentsize) {
        if no_dynamic[at..at + 4] == object::elf::PT_DYNAMIC.0.to_le_bytes() {
            no_dynamic[at..at + 4].copy_from_slice(&object::elf::PT_NULL.0.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 1, "one PT_DYNAMIC");
    let report = check(name, &no_dynamic);
    assert!(report.has(FindingCode::NotLoadable));
    assert!(!report.is_valid());
    insta::assert_snapshot!(
        "no_dynamic_segment",
        message(&report, FindingCode::NotLoadable)
    );
}

#[test]
fn a_macho_dylib_without_segments_is_not_loadable() {
    // MH_DYLIB with no load command at all.
    let mut header = Vec::new();
    for word in [0xfeed_facf_u32, CPU_ARM64, 0, 6, 0, 0, 0, 0] {
        header.extend(word.to_le_bytes());
    }
    let report = check("libweather.dylib", &header);
    assert_eq!(report.kind(), Some(ObjectKind::SharedLibrary));
    assert!(
        report.has(FindingCode::NotLoadable),
        "{}",
        report.render_text()
    );
    assert!(!report.is_valid());
}
