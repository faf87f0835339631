//! The `release.json` parser, through `registry::verify_release` with the
//! size and sha256 of the input (as a signed index would state them), so
//! that every input reaches the JSON. Beyond "no panic": a release that
//! verifies is the one asked for (name and version), survives a JSON round
//! trip, and the same bytes under a wrong size or hash are refused.
#![no_main]

use backworks_registry::{self as registry, Release, ReleaseRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reference = ReleaseRef {
        path: String::from("weather/1.0.0/release.json"),
        sha256: registry::sha256_hex(data),
        size: data.len() as u64,
        abi: None,
        capabilities: None,
        floors: Default::default(),
        deps: Default::default(),
    };
    let release = match registry::verify_release(data, &reference, "weather", "1.0.0") {
        Ok(release) => release,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert_eq!(
        (release.name.as_str(), release.version.as_str()),
        ("weather", "1.0.0")
    );
    let json = serde_json::to_vec(&release).expect("a release serialises");
    let again: Release = serde_json::from_slice(&json).expect("and parses back");
    assert_eq!(again, release);
    let wrong_size = ReleaseRef {
        size: reference.size + 1,
        ..reference.clone()
    };
    assert!(registry::verify_release(data, &wrong_size, "weather", "1.0.0").is_err());
    let wrong_hash = ReleaseRef {
        sha256: registry::sha256_hex(b"another file"),
        ..reference
    };
    assert!(registry::verify_release(data, &wrong_hash, "weather", "1.0.0").is_err());
});
