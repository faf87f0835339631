use std::path::Path;

use proptest::prelude::*;

use super::*;

/// An ELF object file with a `.dep-v0` section holding `contents`.
fn elf_with_section(contents: &[u8]) -> Vec<u8> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let mut file = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let section = file.add_section(Vec::new(), SECTION.as_bytes().to_vec(), SectionKind::Other);
    let offset = file.append_section_data(section, contents, 1);
    file.add_symbol(Symbol {
        name: SYMBOL.as_bytes().to_vec(),
        value: offset,
        size: contents.len() as u64,
        kind: SymbolKind::Data,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
    file.write().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, 7)
}

const PATH: &str = "dist/demo-0.1.0-x86_64-unknown-linux-gnu.so";

fn read_section(contents: &[u8]) -> Result<VersionInfo, DepsError> {
    from_bytes(Path::new(PATH), &elf_with_section(contents))
}

const LIST: &str = r#"{"packages":[{"name":"demo","version":"0.1.0","source":"local","dependencies":[1],"root":true},{"name":"serde_json","version":"1.0.145","source":"crates.io"}]}"#;

#[test]
fn a_list_is_read_back() {
    let info = read_section(&zlib(LIST.as_bytes())).unwrap();
    let lines: Vec<String> = info.packages.iter().map(package_line).collect();
    assert_eq!(lines, ["demo 0.1.0 (local, root)", "serde_json 1.0.145"]);
    assert!(info.packages[0].root);
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
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness};
    let empty = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little)
        .write()
        .unwrap();
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
