//! The registry index parsers: `registry::verify_index` on arbitrary bytes
//! as an `index.json` envelope (JSON, the minisign signature in it, its
//! trusted comment); and, so that the signed index's own JSON is reached
//! too, arbitrary bytes as the index text, which, when it is an `Index`,
//! is signed with `sign_index` and must verify back to the same index.
//! The first byte chooses: even = envelope, odd = index text.
#![no_main]

use std::sync::OnceLock;

use backworks_registry::{self as registry, Freshness, Index};
use libfuzzer_sys::fuzz_target;
use minisign::{KeyPair, PublicKey, SecretKey};

/// One registry key per fuzzing process (which key does not matter: the
/// property is that what is signed with it verifies with it).
fn key() -> &'static (PublicKey, SecretKey) {
    static KEY: OnceLock<(PublicKey, SecretKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = KeyPair::generate_unencrypted_keypair().expect("generate a key");
        (pair.pk, pair.sk)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (public, secret) = key();
    let freshness = Freshness {
        last_serial: None,
        now: 0,
    };
    if mode % 2 == 0 {
        if let Err(error) = registry::verify_index(data, public, freshness, "fuzz/index.json") {
            assert!(!error.to_string().is_empty());
        }
        return;
    }
    let Ok(index) = serde_json::from_slice::<Index>(data) else {
        return;
    };
    let envelope = match registry::sign_index(&index, secret) {
        Ok(envelope) => envelope,
        Err(error) => panic!("an index that parses cannot be signed: {error}"),
    };
    let verified = registry::verify_index(&envelope, public, freshness, "fuzz/index.json");
    if index.format != registry::FORMAT {
        assert!(
            verified.is_err(),
            "an index of format {} is accepted",
            index.format
        );
        return;
    }
    let verified =
        verified.unwrap_or_else(|e| panic!("a freshly signed index does not verify: {e}"));
    assert_eq!(verified, index);
    // A later serial seen before: the same bytes are a rollback, never
    // accepted.
    if let Some(next) = index.serial.checked_add(1) {
        let later = Freshness {
            last_serial: Some(next),
            now: 0,
        };
        assert!(registry::verify_index(&envelope, public, later, "fuzz/index.json").is_err());
    }
});
