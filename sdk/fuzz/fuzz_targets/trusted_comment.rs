//! The trusted comment parser (`signature::TrustedComment::parse`, what
//! `verify` reads from every `.minisig`) on arbitrary text. Beyond "no
//! panic": a comment that parses is written back by
//! `Claims::to_trusted_comment` (what `sign` writes) and that text parses to
//! the same claims and timestamp.
#![no_main]

use backworks_artifact::signature::TrustedComment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match TrustedComment::parse(text) {
        Ok(parsed) => parsed,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let written = parsed
        .claims
        .to_trusted_comment(parsed.timestamp)
        .unwrap_or_else(|e| panic!("{text:?} parses but cannot be written back: {e}"));
    let again = TrustedComment::parse(&written)
        .unwrap_or_else(|e| panic!("{written:?}, written from {text:?}, does not parse: {e}"));
    assert_eq!(again, parsed, "{text:?} -> {written:?}");
});
