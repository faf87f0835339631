//! Unit tests of the floor reader: version numbers, real ELF libraries
//! linked by the system C compiler against a stub glibc library (whose
//! version nodes the linker records as needs), and corrupt version needs.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use super::*;

#[test]
fn versions_compare_as_numbers() {
    let v = |text: &str| Version::parse(text).unwrap();
    assert!(v("2.9") < v("2.17"));
    assert!(v("2.2.5") < v("2.3"));
    assert!(v("2.34") < v("2.34.1"));
    assert_eq!(v("2.34"), v("2.34.0"));
    assert_eq!(v("11"), Version::new(11, 0, 0));
    assert_eq!(v("2.2.5").to_string(), "2.2.5");
    assert_eq!(v("2.34.0").to_string(), "2.34");
    for bad in [
        "",
        "PRIVATE",
        "2.",
        ".2",
        "2..3",
        "1.2.3.4",
        "2.x",
        "-1",
        "99999999999",
    ] {
        assert_eq!(Version::parse(bad), None, "{bad:?}");
    }
    let error = "GLIBC_2.17".parse::<Version>().unwrap_err().to_string();
    assert!(error.contains("`GLIBC_2.17` is not a version"), "{error}");
    let floor = PlatformFloor {
        glibc: Some(v("2.17")),
        macos: None,
    };
    let json = serde_json::to_string(&floor).unwrap();
    assert_eq!(json, r#"{"glibc":"2.17"}"#);
    assert_eq!(serde_json::from_str::<PlatformFloor>(&json).unwrap(), floor);
    assert!(serde_json::from_str::<PlatformFloor>(r#"{"glibc":"new"}"#).is_err());
}

/// Compiles `source` into `dir/name` with the system C compiler and
/// `args`; returns its path.
fn cc(dir: &Path, name: &str, source: &str, args: &[&str]) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).unwrap();
    let out = dir.join(name);
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = std::process::Command::new(&compiler)
        .args(["-shared", "-fPIC", "-nostdlib", "-o"])
        .arg(&out)
        .arg(&source_path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A library needing `GLIBC_2.9`, `GLIBC_2.17` and `GLIBC_PRIVATE` of a
/// stub `libm.so.6` (and nothing of the real glibc: `-nostdlib`).
fn library_needing_glibc() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("stub.map");
    std::fs::write(
        &script,
        "GLIBC_2.9 { global: old_fn; local: *; };\n\
         GLIBC_2.17 { global: new_fn; } GLIBC_2.9;\n\
         GLIBC_PRIVATE { global: private_fn; };\n",
    )
    .unwrap();
    let stub = cc(
        dir.path(),
        "libstub.so",
        "int old_fn(void) { return 1; }\nint new_fn(void) { return 2; }\nint private_fn(void) { return 3; }\n",
        &[
            "-Wl,-soname,libm.so.6",
            &format!("-Wl,--version-script={}", script.display()),
        ],
    );
    let library = cc(
        dir.path(),
        "libuser.so",
        "int old_fn(void); int new_fn(void); int private_fn(void);\n\
         int user(void) { return old_fn() + new_fn() + private_fn(); }\n",
        &[stub.to_str().unwrap()],
    );
    std::fs::read(library).unwrap()
}

#[test]
fn the_newest_glibc_need_is_the_floor_and_private_is_ignored() {
    let report = of_bytes(&library_needing_glibc());
    assert_eq!(
        report.glibc,
        Some(GlibcNeed {
            version: Version::new(2, 17, 0),
            symbol_version: String::from("GLIBC_2.17"),
            library: String::from("libm.so.6"),
        }),
        "2.17 is newer than 2.9, although `GLIBC_2.9` sorts after it as text"
    );
    assert_eq!(
        report.glibc_ignored,
        [IgnoredNeed {
            symbol_version: String::from("GLIBC_PRIVATE"),
            library: String::from("libm.so.6"),
        }]
    );
    assert_eq!(report.glibc_unknown, None);
    assert_eq!(report.macos, None);
    assert_eq!(
        report.describe().unwrap(),
        "glibc 2.17 (symbol version GLIBC_2.17 of libm.so.6); ignored GLIBC_PRIVATE of libm.so.6 (not a release)"
    );
    assert_eq!(
        report.floor(),
        PlatformFloor {
            glibc: Some(Version::new(2, 17, 0)),
            macos: None
        }
    );
}

#[test]
fn a_library_without_version_needs_has_no_glibc_floor() {
    let dir = tempfile::tempdir().unwrap();
    let library = cc(
        dir.path(),
        "libplain.so",
        "int plain(void) { return 0; }\n",
        &[],
    );
    let report = of_bytes(&std::fs::read(library).unwrap());
    assert_eq!(report, FloorReport::default());
    assert_eq!(report.describe(), None);
    assert_eq!(of_bytes(b"not an object file"), FloorReport::default());
}

/// The file offset and size of `.gnu.version_r` in `bytes`.
fn version_needs(bytes: &[u8]) -> (usize, usize) {
    let file = object::File::parse(bytes).unwrap();
    let section = file.section_by_name(".gnu.version_r").unwrap();
    let (offset, size) = section.file_range().unwrap();
    (offset as usize, size as usize)
}

#[test]
fn corrupt_version_needs_make_the_floor_unknown_never_a_panic() {
    let library = library_needing_glibc();
    assert!(
        library[..6] == *b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF"
    );
    let (offset, size) = version_needs(&library);
    assert!(size >= 16);

    // Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32.
    let mut far_aux = library.clone();
    far_aux[offset + 8..offset + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let report = of_bytes(&far_aux);
    assert_eq!(report.glibc, None);
    let reason = report.glibc_unknown.expect("unreadable needs are reported");
    assert!(
        reason.starts_with("`.gnu.version_r` is unreadable: "),
        "{reason}"
    );

    // A first entry with 65535 auxiliary entries, its first one's vna_next
    // 0: the same entry again and again, until the bound.
    let mut looping = library.clone();
    looping[offset + 2..offset + 4].copy_from_slice(&u16::MAX.to_le_bytes());
    let aux =
        offset + u32::from_le_bytes(library[offset + 8..offset + 12].try_into().unwrap()) as usize;
    looping[aux + 12..aux + 16].copy_from_slice(&0u32.to_le_bytes());
    let reason = of_bytes(&looping).glibc_unknown.expect("bounded");
    assert!(reason.contains("more than 4096 entries"), "{reason}");

    // A section cut short: the file truncated in its middle.
    let cut = &library[..offset + size / 2];
    let _ = of_bytes(cut);

    // Every byte of the section set to 0x00, 0x01, 0x7f and 0xff in turn.
    for at in offset..offset + size {
        for value in [0x00, 0x01, 0x7f, 0xff] {
            let mut garbled = library.clone();
            garbled[at] = value;
            let report = of_bytes(&garbled);
            if let Some(need) = &report.glibc {
                assert!(need.symbol_version.starts_with("GLIBC_"));
            }
        }
    }
}
