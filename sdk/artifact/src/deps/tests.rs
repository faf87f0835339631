use std::path::Path;

use proptest::prelude::*;

use super::*;

/// The targets that get a list, one per object format and more.
const TARGETS: [&str; 6] = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "i686-unknown-linux-gnu",
    "x86_64-pc-windows-gnu",
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
];

/// The writer's ELF object with `contents` in its `.dep-v0` section.
fn elf_with_section(contents: &[u8]) -> Vec<u8> {
    object_file("x86_64-unknown-linux-gnu", contents).unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, COMPRESSION_LEVEL)
}

const PATH: &str = "dist/demo-0.1.0-x86_64-unknown-linux-gnu.so";

fn read_section(contents: &[u8]) -> Result<VersionInfo, DepsError> {
    from_bytes(Path::new(PATH), &elf_with_section(contents))
}

const LIST: &str = r#"{"packages":[{"name":"demo","version":"0.1.0","source":"local","dependencies":[1],"root":true},{"name":"serde_json","version":"1.0.145","source":"crates.io"}]}"#;

const LIST3: &str = r#"{"packages":[{"name":"demo","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},{"name":"proc-macro2","version":"1.0.101","source":"crates.io","kind":"build"},{"name":"serde_json","version":"1.0.145","source":"crates.io"}]}"#;

#[test]
fn a_list_is_read_back() {
    let info = read_section(&zlib(LIST.as_bytes())).unwrap();
    let lines: Vec<String> = info.packages.iter().map(package_line).collect();
    assert_eq!(lines, ["demo 0.1.0 (local, root)", "serde_json 1.0.145"]);
    assert!(info.packages[0].root);
}

/// What the writer writes the reader reads back as it was written: whole
/// for ELF, whose relocatable objects `auditable-info` reads like linked
/// libraries; for COFF and Mach-O objects (it reads only linked PE and
/// Mach-O images: the build's cli test reads real links), the section and
/// its symbol.
#[test]
fn the_writer_round_trips() {
    let info: VersionInfo = serde_json::from_str(LIST3).unwrap();
    let contents = compress(&info);
    for triple in TARGETS {
        let object = object_file(triple, &contents).unwrap();
        if object_format(triple) == Some(object::BinaryFormat::Elf) {
            let back = from_bytes(Path::new(PATH), &object).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&info).unwrap(),
                "{triple}"
            );
        }
        // The symbol starts the section, global (hidden: checked by the
        // build's cli test on real links).
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let file = object::read::File::parse(object.as_slice()).unwrap();
        let section = file.section_by_name(SECTION).unwrap();
        assert_eq!(section.data().unwrap(), contents.as_slice(), "{triple}");
        let symbol = file
            .symbol_by_name(SYMBOL)
            .or_else(|| file.symbol_by_name(&format!("_{SYMBOL}")))
            .unwrap();
        assert_eq!(symbol.section_index(), Some(section.index()), "{triple}");
        assert_eq!(symbol.address(), section.address(), "{triple}");
        assert!(symbol.is_global(), "{triple}");
    }
}

#[test]
fn the_writer_is_deterministic_and_refuses_other_targets() {
    let info: VersionInfo = serde_json::from_str(LIST3).unwrap();
    assert_eq!(compress(&info), compress(&info));
    let a = object_file("x86_64-unknown-linux-gnu", b"list").unwrap();
    assert_eq!(a, object_file("x86_64-unknown-linux-gnu", b"list").unwrap());
    for triple in TARGETS {
        assert!(object_format(triple).is_some(), "{triple}");
    }
    for triple in [
        "i686-pc-windows-gnu",
        "x86_64-pc-windows-msvc",
        "riscv64gc-unknown-linux-gnu",
        "not-a-target",
    ] {
        assert!(object_format(triple).is_none(), "{triple}");
        let error = object_file(triple, b"list").unwrap_err();
        assert_eq!(
            error,
            ObjectError::Unsupported {
                target: triple.to_owned()
            }
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("target `{triple}`: ")),
            "{error}"
        );
    }
}

#[test]
fn the_compact_form_leaves_the_root_out() {
    let info: VersionInfo = serde_json::from_str(LIST3).unwrap();
    let list = compact(&info);
    let lines: Vec<String> = list.iter().map(Dependency::line).collect();
    assert_eq!(lines, ["proc-macro2 1.0.101 (build)", "serde_json 1.0.145"]);
    assert_eq!(runtime_count(&list), 1);
    // crates.io and runtime are the defaults, absent in JSON.
    assert_eq!(
        serde_json::to_string(&list).unwrap(),
        r#"[{"name":"proc-macro2","version":"1.0.101","build":true},{"name":"serde_json","version":"1.0.145"}]"#
    );
    let back: Vec<Dependency> = serde_json::from_str(
        r#"[{"name":"helper","version":"0.1.0","source":"local","future":1},{"name":"proc-macro2","version":"1.0.101","build":true}]"#,
    )
    .unwrap();
    assert_eq!(back[0].line(), "helper 0.1.0 (local)");
    assert_eq!(back[1], list[0]);
}

/// The message names the file and the section.
fn assert_names_file_and_section(error: &DepsError, says: &str) {
    let message = error.to_string();
    assert!(message.starts_with(&format!("{PATH}: ")), "{message}");
    assert!(message.contains("`.dep-v0` section"), "{message}");
    assert!(message.contains(says), "{message}");
}

#[test]
fn bad_zlib_is_a_compression_error() {
    let error = read_section(b"\x78\x9c not deflate at all").unwrap_err();
    assert!(matches!(error, DepsError::Compression { .. }), "{error:?}");
    assert_names_file_and_section(&error, "not zlib-compressed data");
    // Truncated zlib too.
    let whole = zlib(LIST.as_bytes());
    let error = read_section(&whole[..whole.len() / 2]).unwrap_err();
    assert!(matches!(error, DepsError::Compression { .. }), "{error:?}");
}

#[test]
fn bad_json_is_a_json_error() {
    for json in [
        "not json",
        r#"{"packages":[{"name":"demo"}]}"#,
        // Two roots.
        r#"{"packages":[{"name":"a","version":"1.0.0","source":"local","root":true},{"name":"b","version":"1.0.0","source":"local","root":true}]}"#,
        // A cycle.
        r#"{"packages":[{"name":"a","version":"1.0.0","source":"local","dependencies":[1]},{"name":"b","version":"1.0.0","source":"local","dependencies":[0]}]}"#,
    ] {
        let error = read_section(&zlib(json.as_bytes())).unwrap_err();
        assert!(matches!(error, DepsError::Json { .. }), "{json}: {error:?}");
        assert_names_file_and_section(&error, "not a valid dependency list");
    }
    let error = read_section(&zlib(b"\xff\xfe")).unwrap_err();
    assert!(matches!(error, DepsError::NotText { .. }), "{error:?}");
    assert_names_file_and_section(&error, "UTF-8");
}

#[test]
fn an_oversized_list_is_refused() {
    // Small compressed, over the limit decompressed (a zip bomb).
    let bomb = zlib(&vec![b' '; MAX_DEPS_JSON_SIZE + 1]);
    assert!(bomb.len() < MAX_DEPS_JSON_SIZE);
    let error = read_section(&bomb).unwrap_err();
    assert!(matches!(error, DepsError::TooLarge { .. }), "{error:?}");
    assert_names_file_and_section(&error, "more than 8388608 bytes");
    // Over the limit compressed.
    let error = read_section(&vec![0; MAX_DEPS_JSON_SIZE + 1]).unwrap_err();
    assert!(matches!(error, DepsError::TooLarge { .. }), "{error:?}");
}

#[test]
fn no_section_and_no_object_file() {
    // An object without the section: the record's, not the list's.
    let empty = {
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness};
        Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little)
            .write()
            .unwrap()
    };
    let error = from_bytes(Path::new(PATH), &empty).unwrap_err();
    assert!(matches!(error, DepsError::Missing { .. }), "{error:?}");
    assert_names_file_and_section(&error, "carries no dependency list");
    let error = from_bytes(Path::new(PATH), b"\x7fELF garbage").unwrap_err();
    assert!(
        matches!(
            error,
            DepsError::Unparsable { .. } | DepsError::Missing { .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().starts_with(PATH), "{error}");
}

#[test]
fn a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let error = read(&dir.path().join("gone.so")).unwrap_err();
    assert!(matches!(error, DepsError::File(_)), "{error:?}");
    assert!(error.to_string().contains("gone.so"), "{error}");
}

proptest! {
    /// Whatever the section holds, reading it returns, never panics.
    #[test]
    fn any_section_is_read_or_refused(contents in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_section(&contents);
        let mut compressed = zlib(&contents);
        let _ = read_section(&compressed);
        if let Some(byte) = compressed.get_mut(contents.len() % 7) {
            *byte ^= 0x55;
        }
        let _ = read_section(&compressed);
    }

    /// Any file is read or refused, never panics.
    #[test]
    fn any_file_is_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = from_bytes(Path::new(PATH), &bytes);
    }
}
