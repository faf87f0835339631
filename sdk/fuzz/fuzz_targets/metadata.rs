//! The metadata record parser (`metadata::parse_header`, `metadata::parse`)
//! on arbitrary bytes. Beyond "no panic": a record that parses encodes back
//! (through `abi::MetadataRecord`, the struct plugins embed) to a record
//! that parses to the same fields; and when the input was a little-endian
//! v1-sized record, to exactly the input's 512 bytes.
#![no_main]

use backworks_abi::{
    BYTE_ORDER_MARK, METADATA_MAGIC, METADATA_RECORD_SIZE, MetadataRecord,
};
use backworks_abi::metadata::{self, ByteOrder};
use libfuzzer_sys::fuzz_target;

fn slot<const N: usize>(text: &str) -> [u8; N] {
    let mut slot = [0u8; N];
    slot[..text.len()].copy_from_slice(text.as_bytes());
    slot
}

fuzz_target!(|data: &[u8]| {
    let header = metadata::parse_header(data);
    let Ok(parsed) = metadata::parse(data) else {
        return;
    };
    assert_eq!(
        header.ok(),
        Some(parsed.header),
        "parse agrees with parse_header"
    );
    let h = &parsed.header;
    let record = MetadataRecord {
        magic: METADATA_MAGIC,
        byte_order: BYTE_ORDER_MARK,
        record_size: METADATA_RECORD_SIZE as u32,
        abi_version: h.abi_version,
        info_size: h.info_size,
        vtable_size: h.vtable_size,
        flags: h.flags,
        sdk_version: slot(&parsed.sdk_version),
        name: slot(&parsed.name),
        version: slot(&parsed.version),
        target: slot(&parsed.target),
        description: slot(&parsed.description),
    };
    let again = metadata::parse(record.as_bytes()).expect("a re-encoded record parses");
    assert_eq!(again.sdk_version, parsed.sdk_version);
    assert_eq!(again.name, parsed.name);
    assert_eq!(again.version, parsed.version);
    assert_eq!(again.target, parsed.target);
    assert_eq!(again.description, parsed.description);
    assert_eq!(
        (
            again.header.abi_version,
            again.header.info_size,
            again.header.vtable_size,
            again.header.flags
        ),
        (h.abi_version, h.info_size, h.vtable_size, h.flags)
    );
    if cfg!(target_endian = "little")
        && h.byte_order == ByteOrder::Little
        && h.record_size as usize == METADATA_RECORD_SIZE
    {
        assert_eq!(
            record.as_bytes(),
            &data[..METADATA_RECORD_SIZE],
            "byte-exact round trip"
        );
    }
});
