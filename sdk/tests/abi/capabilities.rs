//! A C plugin declares its capabilities with the header's
//! `BACKWORKS_DECLARE_METADATA_WITH_CAPABILITIES`: the record is read from
//! the file's bytes and from memory with the declaration, and the host
//! loads the plugin with its longer record.

use backworks_artifact::inspect::find_metadata;
use backworks_plugin_sdk::abi::capabilities::{
    Capabilities, EXTENDED_RECORD_SIZE, Endpoint, Network,
};

use crate::support;

#[test]
fn a_c_plugin_declares_its_capabilities_with_the_header() {
    let library = support::c_capabilities_plugin();
    let from_file = find_metadata(&std::fs::read(&library).unwrap()).unwrap();
    let expected = Capabilities {
        network: Network::Endpoints(vec![Endpoint::parse("api.example.com:443").unwrap()]),
        env: vec!["LANG".into(), "TZ".into(), "USERID".into()],
        ..Capabilities::default()
    };
    assert_eq!(from_file.capabilities.as_ref(), Some(&expected));
    // The fixture's JSON is 64 bytes: the slot holds them and the
    // literal's NUL, padded to a multiple of 8.
    assert_eq!(
        from_file.header.record_size as usize,
        EXTENDED_RECORD_SIZE + 72
    );
    assert_eq!(from_file.name, "c-capabilities");

    let loaded = support::load_fresh(&library);
    assert_eq!(loaded.metadata().unwrap(), from_file);
    let plugin = loaded.plugin().unwrap();
    assert_eq!(plugin.name(), "c-capabilities");

    // The plain macro still writes v1's record, which declares nothing.
    let weather = find_metadata(&std::fs::read(support::c_plugin()).unwrap()).unwrap();
    assert_eq!(weather.capabilities, None);
    assert_eq!(weather.header.record_size, 512);
}
