//! The plugin metadata record: what a plugin says about itself without
//! running any of its code.
//!
//! `export_plugin!` (and `BACKWORKS_DECLARE_METADATA` in the C header) place a
//! fixed-size [`MetadataRecord`] in a section of
//! its own and export it as the data symbol `backworks_plugin_metadata`. This
//! module turns the record's bytes, taken from the file or from memory, into
//! a [`PluginMetadata`], or says precisely what is wrong with them. It never
//! panics on any input; the byte layout is in `docs/abi.md`.

use std::fmt;

use crate::capabilities::{
    Capabilities, EXTENDED_RECORD_SIZE, EXTENSION_OFFSET, MAX_CAPABILITIES_SIZE,
};
use crate::{
    ABI_MINOR, ABI_VERSION, BYTE_ORDER_MARK, MAX_VTABLE_ENTRIES, METADATA_MAGIC,
    METADATA_RECORD_SIZE, MetadataRecord, VTABLE_ENTRIES,
};

/// Bytes every version of the record starts with: magic, byte-order mark,
/// record size, ABI version, the two struct sizes and the flags.
pub const HEADER_SIZE: usize = 32;

/// Flag bit: the plugin was compiled with `panic = "abort"`, so the SDK cannot
/// catch its panics at the boundary and one panic would end the host.
/// Hosts refuse such plugins.
pub const FLAG_PANIC_ABORT: u32 = 1;

/// Where the ABI minor revision sits in the record's flags: bits 16 to 23
/// (`(flags >> 16) & 0xff`). 0 is ABI 1.0, which every record written
/// before revisions existed declares.
pub const FLAG_ABI_MINOR_SHIFT: u32 = 16;

/// The flag bits holding the ABI minor revision.
pub const FLAG_ABI_MINOR_MASK: u32 = 0xff << FLAG_ABI_MINOR_SHIFT;

/// An ABI revision: the major version ([`ABI_VERSION`]) and the minor
/// revision of the vtable, shown as `1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiRevision {
    /// The major version: a plugin of another one is refused.
    pub major: u32,
    /// The minor revision: each appends vtable entries.
    pub minor: u32,
}

impl AbiRevision {
    /// The newest revision this crate defines (`1.1`).
    pub const NEWEST: Self = Self {
        major: ABI_VERSION,
        minor: ABI_MINOR,
    };
}

impl fmt::Display for AbiRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl serde::Serialize for AbiRevision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a record's `vtable_size` does not fit its ABI revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VTableSizeError {
    /// A revision this crate knows has exactly this size.
    #[error("ABI {revision} needs `vtable_size` = {expected} ({entries} × pointer), found {found}")]
    Known {
        /// The record's revision.
        revision: AbiRevision,
        /// The record's `vtable_size`.
        found: u32,
        /// The revision's size on this pointer width.
        expected: u32,
        /// The revision's entries.
        entries: u32,
    },
    /// A newer revision's table must hold the newest known one's entries,
    /// whole pointers, at most [`MAX_VTABLE_ENTRIES`].
    #[error(
        "ABI {revision} (newer than {}) needs a `vtable_size` that is a multiple of {pointer} between {min} and {max}, found {found}",
        AbiRevision::NEWEST
    )]
    Newer {
        /// The record's revision.
        revision: AbiRevision,
        /// The record's `vtable_size`.
        found: u32,
        /// Pointer size in bytes.
        pointer: u32,
        /// The newest known revision's size.
        min: u32,
        /// [`MAX_VTABLE_ENTRIES`] pointers.
        max: u32,
    },
}

/// How many vtable entries a plugin of `revision` with a table of
/// `vtable_size` bytes has, on a target with `pointer`-byte pointers: a
/// known revision must have exactly its size ([`VTABLE_ENTRIES`]); a newer
/// one at least the newest known size, in whole pointers, at most
/// [`MAX_VTABLE_ENTRIES`] (the host then uses the entries it knows).
pub fn vtable_entries(
    revision: AbiRevision,
    vtable_size: u32,
    pointer: u32,
) -> Result<u32, VTableSizeError> {
    if let Some(&entries) = VTABLE_ENTRIES.get(revision.minor as usize) {
        let expected = entries * pointer;
        return if vtable_size == expected {
            Ok(entries)
        } else {
            Err(VTableSizeError::Known {
                revision,
                found: vtable_size,
                expected,
                entries,
            })
        };
    }
    let min = VTABLE_ENTRIES[ABI_MINOR as usize] * pointer;
    let max = MAX_VTABLE_ENTRIES * pointer;
    if pointer == 0 || !vtable_size.is_multiple_of(pointer) || !(min..=max).contains(&vtable_size) {
        return Err(VTableSizeError::Newer {
            revision,
            found: vtable_size,
            pointer,
            min,
            max,
        });
    }
    Ok(vtable_size / pointer)
}

/// Byte order of the record's integers (the target's own order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Little-endian.
    Little,
    /// Big-endian.
    Big,
}

/// The fixed part every record version starts with. Enough to tell which ABI
/// a plugin was built for, even when the rest is of an unknown layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Order of the integers in the record.
    pub byte_order: ByteOrder,
    /// Size of the whole record in bytes, as the plugin declares it.
    pub record_size: u32,
    /// The ABI version the plugin was built against.
    pub abi_version: u32,
    /// `sizeof(PluginInfo)` in the plugin.
    pub info_size: u32,
    /// `sizeof(PluginVTable)` in the plugin.
    pub vtable_size: u32,
    /// Flag bits (`FLAG_*`); unknown bits are ignored.
    pub flags: u32,
}

impl RecordHeader {
    /// The ABI minor revision the record declares (flag bits 16 to 23).
    pub fn abi_minor(&self) -> u32 {
        (self.flags & FLAG_ABI_MINOR_MASK) >> FLAG_ABI_MINOR_SHIFT
    }

    /// The ABI revision the record declares, e.g. `1.1`.
    pub fn abi_revision(&self) -> AbiRevision {
        AbiRevision {
            major: self.abi_version,
            minor: self.abi_minor(),
        }
    }
}

/// A parsed, validated metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginMetadata {
    /// The fixed header.
    pub header: RecordHeader,
    /// Version of the SDK (or C header) the plugin was built with.
    pub sdk_version: String,
    /// The plugin package's name (for Rust plugins, the crate name).
    pub name: String,
    /// The plugin package's version.
    pub version: String,
    /// The target triple the plugin was built for.
    pub target: String,
    /// One line about the plugin; may be empty.
    pub description: String,
    /// What the plugin declares it needs (the record's extension); `None`
    /// when it declares nothing, or its record predates the extension.
    pub capabilities: Option<Capabilities>,
}

impl PluginMetadata {
    /// The ABI version the plugin was built against.
    pub fn abi_version(&self) -> u32 {
        self.header.abi_version
    }

    /// The ABI revision the plugin was built for, e.g. `1.1`.
    pub fn abi_revision(&self) -> AbiRevision {
        self.header.abi_revision()
    }

    /// Whether the plugin was built with `panic = "abort"`.
    pub fn panic_aborts(&self) -> bool {
        self.header.flags & FLAG_PANIC_ABORT != 0
    }
}

/// Why bytes are not a valid metadata record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Fewer bytes than the record needs.
    #[error("metadata record truncated: {needed} bytes needed for {what}, {available} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The record does not start with `BWKSPLUG`.
    #[error(
        "not a backworks metadata record: magic is {found:02x?}, expected {:02x?} (\"BWKSPLUG\")",
        METADATA_MAGIC
    )]
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// The byte-order mark is neither order of `0x0A0B0C0D`.
    #[error(
        "metadata record has byte-order mark {found:#010x}, expected 0x0a0b0c0d in either byte order"
    )]
    BadByteOrder {
        /// The mark as read little-endian.
        found: u32,
    },
    /// The declared size is below the v1 layout or beyond the bytes present.
    #[error(
        "metadata record declares {declared} bytes (abi v{abi_version}); a v{ABI_VERSION} record is at least {METADATA_RECORD_SIZE} bytes and {available} are present"
    )]
    BadRecordSize {
        /// The size the record declares.
        declared: u32,
        /// The ABI version the record declares.
        abi_version: u32,
        /// Bytes present.
        available: usize,
    },
    /// A string field has no terminating NUL within its slot.
    #[error("metadata field `{field}` is not NUL-terminated within its {capacity} bytes")]
    Unterminated {
        /// The field's name.
        field: &'static str,
        /// The slot's size.
        capacity: usize,
    },
    /// Bytes after a string's NUL are not zero.
    #[error("metadata field `{field}` has non-zero bytes after its terminating NUL")]
    DirtyPadding {
        /// The field's name.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("metadata field `{field}` is not valid UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 {
        /// The field's name.
        field: &'static str,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A required string field is empty.
    #[error("metadata field `{field}` is empty; the plugin must declare it")]
    Empty {
        /// The field's name.
        field: &'static str,
    },
    /// The capabilities extension is out of the record's bounds, or its
    /// declaration is not valid.
    #[error("metadata record's capabilities extension: {problem}")]
    BadCapabilities {
        /// What is wrong.
        problem: String,
    },
}

/// The byte range of a string slot of [`MetadataRecord`].
macro_rules! slot {
    ($field:ident) => {{
        let start = std::mem::offset_of!(MetadataRecord, $field);
        let len = std::mem::size_of_val(&MetadataRecord::ZEROED.$field);
        start..start + len
    }};
}

/// Reads the fixed header of a record at the start of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<RecordHeader, MetadataError> {
    let head = bytes.get(..HEADER_SIZE).ok_or(MetadataError::Truncated {
        what: "the record header",
        needed: HEADER_SIZE,
        available: bytes.len(),
    })?;
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&head[..8]);
    if magic != METADATA_MAGIC {
        return Err(MetadataError::BadMagic { found: magic });
    }
    let raw_mark = word(head, 8);
    let byte_order = if u32::from_le_bytes(raw_mark) == BYTE_ORDER_MARK {
        ByteOrder::Little
    } else if u32::from_be_bytes(raw_mark) == BYTE_ORDER_MARK {
        ByteOrder::Big
    } else {
        return Err(MetadataError::BadByteOrder {
            found: u32::from_le_bytes(raw_mark),
        });
    };
    let read = |offset| match byte_order {
        ByteOrder::Little => u32::from_le_bytes(word(head, offset)),
        ByteOrder::Big => u32::from_be_bytes(word(head, offset)),
    };
    Ok(RecordHeader {
        byte_order,
        record_size: read(12),
        abi_version: read(16),
        info_size: read(20),
        vtable_size: read(24),
        flags: read(28),
    })
}

/// Parses and validates a record at the start of `bytes` (which may go on
/// past the record, e.g. a whole section).
///
/// Records of a later ABI that grew at the end parse as far as v1 knows
/// them; the caller decides about the ABI version (see
/// [`abi::check_compatible`](crate::check_compatible)).
pub fn parse(bytes: &[u8]) -> Result<PluginMetadata, MetadataError> {
    let header = parse_header(bytes)?;
    let declared = header.record_size as usize;
    if declared < METADATA_RECORD_SIZE || declared > bytes.len() {
        return Err(MetadataError::BadRecordSize {
            declared: header.record_size,
            abi_version: header.abi_version,
            available: bytes.len(),
        });
    }
    let field =
        |name, range: std::ops::Range<usize>, required| string_field(name, &bytes[range], required);
    Ok(PluginMetadata {
        header,
        sdk_version: field("sdk_version", slot!(sdk_version), true)?,
        name: field("name", slot!(name), true)?,
        version: field("version", slot!(version), true)?,
        target: field("target", slot!(target), true)?,
        description: field("description", slot!(description), false)?,
        capabilities: capabilities(&bytes[..declared], header.byte_order)?,
    })
}

/// The declaration in a record's extension (`docs/abi.md` §2): `None` when
/// the record is too short to have the extension or declares nothing.
fn capabilities(
    record: &[u8],
    byte_order: ByteOrder,
) -> Result<Option<Capabilities>, MetadataError> {
    if record.len() < EXTENDED_RECORD_SIZE {
        return Ok(None);
    }
    let read = |offset| {
        let w = word(record, offset);
        match byte_order {
            ByteOrder::Little => u32::from_le_bytes(w),
            ByteOrder::Big => u32::from_be_bytes(w),
        }
    };
    let (offset, size) = (
        read(EXTENSION_OFFSET) as usize,
        read(EXTENSION_OFFSET + 4) as usize,
    );
    if size == 0 {
        return Ok(None);
    }
    let text = offset
        .checked_add(size)
        .filter(|&end| offset >= EXTENDED_RECORD_SIZE && size <= MAX_CAPABILITIES_SIZE && end <= record.len())
        .map(|end| &record[offset..end])
        .ok_or_else(|| MetadataError::BadCapabilities {
            problem: format!(
                "{size} bytes at offset {offset} do not fit a {} byte record after its extension header (at most {MAX_CAPABILITIES_SIZE} bytes from offset {EXTENDED_RECORD_SIZE})",
                record.len()
            ),
        })?;
    let text = std::str::from_utf8(text).map_err(|e| MetadataError::BadCapabilities {
        problem: format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
    })?;
    Capabilities::from_json(text)
        .map(Some)
        .map_err(|e| MetadataError::BadCapabilities {
            problem: e.to_string(),
        })
}

fn word(bytes: &[u8], offset: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[offset..offset + 4]);
    w
}

fn string_field(field: &'static str, slot: &[u8], required: bool) -> Result<String, MetadataError> {
    let end = slot
        .iter()
        .position(|&b| b == 0)
        .ok_or(MetadataError::Unterminated {
            field,
            capacity: slot.len(),
        })?;
    if slot[end..].iter().any(|&b| b != 0) {
        return Err(MetadataError::DirtyPadding { field });
    }
    let text = std::str::from_utf8(&slot[..end]).map_err(|e| MetadataError::NotUtf8 {
        field,
        valid_up_to: e.valid_up_to(),
    })?;
    if required && text.is_empty() {
        return Err(MetadataError::Empty { field });
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The SDK version the test records claim.
    const SDK_VERSION: &str = "1.2.3-sdk";

    fn record() -> MetadataRecord {
        MetadataRecord::new(SDK_VERSION, "my-plugin", "1.2.3", "does things", 0)
    }

    fn bytes_of(record: &MetadataRecord) -> Vec<u8> {
        record.as_bytes().to_vec()
    }

    #[test]
    fn a_valid_record_parses() {
        let parsed = parse(&bytes_of(&record())).unwrap();
        assert_eq!(parsed.name, "my-plugin");
        assert_eq!(parsed.version, "1.2.3");
        assert_eq!(parsed.description, "does things");
        assert_eq!(parsed.target, crate::TARGET);
        assert_eq!(parsed.sdk_version, SDK_VERSION);
        assert_eq!(parsed.abi_version(), crate::ABI_VERSION);
        assert!(!parsed.panic_aborts());
    }

    #[test]
    fn trailing_bytes_and_larger_later_records_are_accepted() {
        let mut bytes = bytes_of(&record());
        bytes.extend_from_slice(&[0xAA; 100]);
        assert!(parse(&bytes).is_ok(), "a section may be padded");
        bytes[12..16].copy_from_slice(&(METADATA_RECORD_SIZE as u32 + 64).to_ne_bytes());
        bytes[METADATA_RECORD_SIZE..].fill(0);
        assert!(parse(&bytes).is_ok(), "a later ABI may grow the record");
    }

    #[test]
    fn a_capabilities_extension_out_of_bounds_or_invalid_is_refused() {
        let text = br#"{"network":"any"}"#;
        let mut bytes = bytes_of(&record());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(text);
        let size = bytes.len() as u32;
        bytes[12..16].copy_from_slice(&size.to_ne_bytes());
        let put = |bytes: &mut Vec<u8>, offset: u32, len: u32| {
            bytes[512..516].copy_from_slice(&offset.to_ne_bytes());
            bytes[516..520].copy_from_slice(&len.to_ne_bytes());
        };
        put(&mut bytes, 520, text.len() as u32);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(
            parsed.capabilities.unwrap().network,
            crate::capabilities::Network::Any
        );
        for (offset, len, expected) in [
            (520, text.len() as u32 + 1, "do not fit"),
            (u32::MAX, 2, "do not fit"),
            (0, 4, "do not fit"),
            (516, 4, "do not fit"),
            (520, 4, "is not JSON"),
        ] {
            put(&mut bytes, offset, len);
            let error = parse(&bytes).unwrap_err();
            assert!(
                matches!(error, MetadataError::BadCapabilities { .. })
                    && error.to_string().contains(expected),
                "{offset} {len}: {error}"
            );
        }
        put(&mut bytes, 520, text.len() as u32);
        bytes[521] = 0xff;
        assert!(parse(&bytes).unwrap_err().to_string().contains("not UTF-8"));
    }

    #[test]
    fn the_other_byte_order_is_read() {
        let mut bytes = bytes_of(&record());
        for offset in (8..32).step_by(4) {
            bytes[offset..offset + 4].reverse();
        }
        let parsed = parse(&bytes).unwrap();
        let native = parse(&bytes_of(&record())).unwrap();
        assert_ne!(parsed.header.byte_order, native.header.byte_order);
        assert_eq!(parsed.header.abi_version, native.header.abi_version);
        assert_eq!(parsed.name, native.name);
    }

    #[test]
    fn empty_and_truncated_input() {
        assert_eq!(
            parse(&[]),
            Err(MetadataError::Truncated {
                what: "the record header",
                needed: HEADER_SIZE,
                available: 0
            })
        );
        let bytes = bytes_of(&record());
        assert_eq!(
            parse(&bytes[..300]),
            Err(MetadataError::BadRecordSize {
                declared: 512,
                abi_version: 1,
                available: 300
            })
        );
        let message = parse(&bytes[..300]).unwrap_err().to_string();
        assert!(message.contains("declares 512 bytes"), "{message}");
    }

    #[test]
    fn wrong_magic_and_byte_order() {
        let mut bytes = bytes_of(&record());
        bytes[0] = b'X';
        let error = parse(&bytes).unwrap_err();
        assert!(matches!(error, MetadataError::BadMagic { found } if found[0] == b'X'));
        assert!(error.to_string().contains("BWKSPLUG"));
        let mut bytes = bytes_of(&record());
        bytes[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            parse(&bytes),
            Err(MetadataError::BadByteOrder { .. })
        ));
    }

    #[test]
    fn huge_and_tiny_declared_sizes() {
        for declared in [0, 31, 511, 513, u32::MAX] {
            let mut bytes = bytes_of(&record());
            bytes[12..16].copy_from_slice(&declared.to_ne_bytes());
            assert_eq!(
                parse(&bytes),
                Err(MetadataError::BadRecordSize {
                    declared,
                    abi_version: 1,
                    available: METADATA_RECORD_SIZE
                }),
                "declared {declared}"
            );
        }
    }

    #[test]
    fn bad_strings() {
        let name = std::mem::offset_of!(MetadataRecord, name);
        let mut bytes = bytes_of(&record());
        bytes[name..name + 64].fill(b'a');
        assert_eq!(
            parse(&bytes),
            Err(MetadataError::Unterminated {
                field: "name",
                capacity: 64
            })
        );
        let mut bytes = bytes_of(&record());
        bytes[name + 1] = 0xFF;
        assert_eq!(
            parse(&bytes),
            Err(MetadataError::NotUtf8 {
                field: "name",
                valid_up_to: 1
            })
        );
        let mut bytes = bytes_of(&record());
        bytes[name + 40] = b'x';
        assert_eq!(
            parse(&bytes),
            Err(MetadataError::DirtyPadding { field: "name" })
        );
        let mut bytes = bytes_of(&record());
        bytes[name..name + 64].fill(0);
        assert_eq!(parse(&bytes), Err(MetadataError::Empty { field: "name" }));
        let description = std::mem::offset_of!(MetadataRecord, description);
        let mut bytes = bytes_of(&record());
        bytes[description..description + 256].fill(0);
        assert_eq!(
            parse(&bytes).unwrap().description,
            "",
            "description is optional"
        );
    }

    #[test]
    fn long_descriptions_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes, two per character
        let record = MetadataRecord::new(SDK_VERSION, "p", "1", &long, 0);
        let parsed = parse(&bytes_of(&record)).unwrap();
        assert_eq!(parsed.description, "é".repeat(127));
    }

    #[test]
    fn header_of_another_abi_is_readable() {
        let mut bytes = bytes_of(&record());
        bytes[16..20].copy_from_slice(&7u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&64u32.to_ne_bytes());
        let header = parse_header(&bytes).unwrap();
        assert_eq!(header.abi_version, 7);
        let error = parse(&bytes).unwrap_err();
        assert!(error.to_string().contains("abi v7"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Any bytes at all: a record or a precise error, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = parse(&bytes);
            let _ = parse_header(&bytes);
        }

        /// A valid record with random bytes overwritten: still no panic, and
        /// when it parses, the strings are what the bytes say.
        #[test]
        fn corrupted_records_never_panic(
            edits in proptest::collection::vec((0usize..METADATA_RECORD_SIZE, any::<u8>()), 1..16),
            cut in 0usize..=METADATA_RECORD_SIZE,
        ) {
            let mut bytes = bytes_of(&record());
            for (offset, value) in edits {
                bytes[offset] = value;
            }
            bytes.truncate(cut.max(1));
            if let Ok(parsed) = parse(&bytes) {
                prop_assert!(parsed.name.len() < 64);
                prop_assert!(!parsed.name.contains('\0'));
            }
        }
    }
}
